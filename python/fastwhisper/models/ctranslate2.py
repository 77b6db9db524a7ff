"""CTranslate2 / faster-whisper directories (model.bin + config.json + vocabulary) <-> openai layout.

The writer also writes vocabulary.json and tokenizer.json (ctranslate2_vocabulary.py) when openai-whisper's
tokenizer fits the model's vocabulary size, so that CTranslate2 and faster-whisper load the directory offline.

model.bin (binary version 6, little-endian), as CTranslate2 writes it:
    u32 version | str spec name | u32 spec revision | u32 n_variables
    n_variables x [str name | u8 rank | u32 dims[rank] | u8 dtype | u32 n_bytes | bytes]
    u32 n_aliases | n_aliases x [str alias | str target]
where str = u16 length (including a NUL) + bytes. dtype ids: 0 float32, 1 int8, 2 int16, 3 int32,
4 float16, 5 bfloat16. Whisper's fused projections: self-attention linear_0 = [q; k; v] (the key
bias stored as zeros), cross-attention linear_0 = q, linear_1 = [k; v], linear_2 = out.
"""

import io
import json
import struct
from pathlib import Path
from typing import BinaryIO, Dict, List, Tuple, Union

import torch

from ..errors import ModelLoadError
from . import Checkpoint, ctranslate2_vocabulary, dims_from_state_dict

BINARY_VERSION = 6
SPEC_NAME = "WhisperSpec"
SPEC_REVISION = 3
DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}
DTYPE_IDS = {v: k for k, v in DTYPES.items()}

# (CTranslate2 suffix, openai suffix) inside one layer
_LN = (("layer_norm/gamma", "weight"), ("layer_norm/beta", "bias"))


class _Reader:
    def __init__(self, data: bytes, source: str):
        self.data, self.offset, self.source = data, 0, source

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.data):
            raise ModelLoadError(
                f"{self.source}: truncated CTranslate2 model.bin (needs {self.offset + n} bytes, has {len(self.data)})"
            )
        chunk = self.data[self.offset : self.offset + n]
        self.offset += n
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (n,) = self.unpack("H")
        return self.take(n).rstrip(b"\0").decode("utf-8")


def read_variables(data: bytes, source: str = "model.bin") -> Dict[str, torch.Tensor]:
    """All variables of a model.bin (aliases resolved), as CPU tensors in their stored dtype."""
    r = _Reader(data, source)
    (version,) = r.unpack("I")
    if version != BINARY_VERSION:
        raise ModelLoadError(f"{source}: CTranslate2 binary version {version} is not supported (expected {BINARY_VERSION})")
    spec = r.string()
    if spec != SPEC_NAME:
        raise ModelLoadError(f"{source}: not a Whisper model (CTranslate2 spec {spec!r})")
    r.unpack("I")  # spec revision
    (count,) = r.unpack("I")
    variables = {}
    for _ in range(count):
        name = r.string()
        (rank,) = r.unpack("B")
        shape = r.unpack(f"{rank}I") if rank else ()
        dtype_id, n_bytes = r.unpack("BI")
        if dtype_id not in DTYPES:
            raise ModelLoadError(f"{source}: variable {name} has unknown dtype id {dtype_id}")
        raw = bytearray(r.take(n_bytes))
        tensor = torch.frombuffer(raw, dtype=DTYPES[dtype_id]) if n_bytes else torch.empty(0, dtype=DTYPES[dtype_id])
        expected = 1
        for d in shape:
            expected *= d
        if tensor.numel() != expected:
            raise ModelLoadError(f"{source}: variable {name} has {tensor.numel()} values for shape {list(shape)}")
        variables[name] = tensor.reshape(shape)
    (n_aliases,) = r.unpack("I")
    for _ in range(n_aliases):
        alias, target = r.string(), r.string()
        variables[alias] = variables[target]
    return variables


def _layer_map(side: str, i: int) -> List[Tuple[str, str]]:
    """(CTranslate2 name, openai name) for the plain (unfused) tensors of layer i."""
    c, o = f"{side}/layer_{i}", f"{side}.blocks.{i}"
    pairs = [(f"{c}/self_attention/{a}", f"{o}.attn_ln.{b}") for a, b in _LN]
    pairs += [(f"{c}/self_attention/linear_1/{p}", f"{o}.attn.out.{p}") for p in ("weight", "bias")]
    pairs += [(f"{c}/ffn/{a}", f"{o}.mlp_ln.{b}") for a, b in _LN]
    pairs += [(f"{c}/ffn/linear_0/{p}", f"{o}.mlp.0.{p}") for p in ("weight", "bias")]
    pairs += [(f"{c}/ffn/linear_1/{p}", f"{o}.mlp.2.{p}") for p in ("weight", "bias")]
    if side == "decoder":
        pairs += [(f"{c}/attention/{a}", f"{o}.cross_attn_ln.{b}") for a, b in _LN]
        pairs += [(f"{c}/attention/linear_0/{p}", f"{o}.cross_attn.query.{p}") for p in ("weight", "bias")]
        pairs += [(f"{c}/attention/linear_2/{p}", f"{o}.cross_attn.out.{p}") for p in ("weight", "bias")]
    return pairs


def _global_map() -> List[Tuple[str, str]]:
    pairs = [(f"encoder/conv{n}/{p}", f"encoder.conv{n}.{p}") for n in (1, 2) for p in ("weight", "bias")]
    pairs += [("encoder/position_encodings/encodings", "encoder.positional_embedding")]
    pairs += [(f"encoder/{a}", f"encoder.ln_post.{b}") for a, b in _LN]
    pairs += [("decoder/embeddings/weight", "decoder.token_embedding.weight")]
    pairs += [("decoder/position_encodings/encodings", "decoder.positional_embedding")]
    pairs += [(f"decoder/{a}", f"decoder.ln.{b}") for a, b in _LN]
    return pairs


def _count(variables, side: str) -> int:
    n = 0
    while f"{side}/layer_{n}/ffn/linear_0/weight" in variables:
        n += 1
    return n


def to_openai(variables: Dict[str, torch.Tensor], source: str = "model.bin") -> Dict[str, torch.Tensor]:
    """openai-layout state_dict from CTranslate2 variables (fused projections split)."""
    sd: Dict[str, torch.Tensor] = {}
    try:
        for c, o in _global_map():
            sd[o] = variables[c]
        for side in ("encoder", "decoder"):
            for i in range(_count(variables, side)):
                for c, o in _layer_map(side, i):
                    sd[o] = variables[c]
                base, o = f"{side}/layer_{i}", f"{side}.blocks.{i}"
                q, k, v = variables[f"{base}/self_attention/linear_0/weight"].chunk(3, dim=0)
                qb, _, vb = variables[f"{base}/self_attention/linear_0/bias"].chunk(3, dim=0)
                sd.update({f"{o}.attn.query.weight": q, f"{o}.attn.key.weight": k, f"{o}.attn.value.weight": v,
                           f"{o}.attn.query.bias": qb, f"{o}.attn.value.bias": vb})
                if side == "decoder":
                    k, v = variables[f"{base}/attention/linear_1/weight"].chunk(2, dim=0)
                    _, vb = variables[f"{base}/attention/linear_1/bias"].chunk(2, dim=0)
                    sd.update({f"{o}.cross_attn.key.weight": k, f"{o}.cross_attn.value.weight": v,
                               f"{o}.cross_attn.value.bias": vb})
    except KeyError as exc:
        raise ModelLoadError(f"{source}: Whisper variable {exc.args[0]} is missing") from None
    return {k: t.contiguous() for k, t in sd.items()}


def _scalar(variables, name: str, source: str) -> int:
    if name not in variables:
        raise ModelLoadError(f"{source}: Whisper variable {name} is missing")
    return int(variables[name].item())


def read(path: Union[str, Path], model_bin_parts: List[Path] = None) -> Checkpoint:
    """A CTranslate2 Whisper directory (or its model.bin split into parts, concatenated in order)."""
    path = Path(path)
    parts = model_bin_parts or [path / "model.bin"]
    for p in parts:
        if not p.is_file():
            raise ModelLoadError(f"{path}: CTranslate2 model file {p.name} is missing")
    data = b"".join(p.read_bytes() for p in parts)
    source = str(parts[0])
    variables = read_variables(data, source)
    sd = to_openai(variables, source)
    dims = dims_from_state_dict(sd, _scalar(variables, "encoder/num_heads", source),
                                _scalar(variables, "decoder/num_heads", source))
    heads = None
    config = path / "config.json"
    if config.is_file():
        heads = [tuple(h) for h in json.loads(config.read_text()).get("alignment_heads", [])] or None
    return Checkpoint(dims, sd, heads)


# ---- writer (round trips, and converting openai checkpoints for faster-whisper users) -------------


def _write_string(out: BinaryIO, s: str) -> None:
    b = s.encode("utf-8") + b"\0"
    out.write(struct.pack("<H", len(b)) + b)


def _write_variable(out: BinaryIO, name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    _write_string(out, name)
    out.write(struct.pack("<B", t.dim()) + struct.pack(f"<{t.dim()}I", *t.shape))
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    out.write(struct.pack("<BI", DTYPE_IDS[t.dtype], len(raw)) + raw)


def from_openai(ckpt: Checkpoint) -> Dict[str, torch.Tensor]:
    """CTranslate2 variables for an openai-layout checkpoint (inverse of to_openai)."""
    sd, dims = ckpt.state_dict, ckpt.dims
    var: Dict[str, torch.Tensor] = {}
    for c, o in _global_map():
        var[c] = sd[o]
    for side, n in (("encoder", dims.n_audio_layer), ("decoder", dims.n_text_layer)):
        for i in range(n):
            for c, o in _layer_map(side, i):
                var[c] = sd[o]
            base, o = f"{side}/layer_{i}", f"{side}.blocks.{i}"
            var[f"{base}/self_attention/linear_0/weight"] = torch.cat(
                [sd[f"{o}.attn.{p}.weight"] for p in ("query", "key", "value")])
            qb = sd[f"{o}.attn.query.bias"]
            var[f"{base}/self_attention/linear_0/bias"] = torch.cat([qb, torch.zeros_like(qb), sd[f"{o}.attn.value.bias"]])
            if side == "decoder":
                var[f"{base}/attention/linear_1/weight"] = torch.cat(
                    [sd[f"{o}.cross_attn.key.weight"], sd[f"{o}.cross_attn.value.weight"]])
                vb = sd[f"{o}.cross_attn.value.bias"]
                var[f"{base}/attention/linear_1/bias"] = torch.cat([torch.zeros_like(vb), vb])
    var["encoder/num_heads"] = torch.tensor(dims.n_audio_head, dtype=torch.int16)
    var["decoder/num_heads"] = torch.tensor(dims.n_text_head, dtype=torch.int16)
    flags = {"activation": (3, torch.int8), "alibi": (0, torch.int8), "pre_norm": (1, torch.int8),
             "scale_embeddings": (0, torch.int8), "start_from_zero_embedding": (0, torch.int8),
             "alignment_heads": (1, torch.int16), "alignment_layer": (-1, torch.int16)}
    for name, (value, dtype) in flags.items():
        var[f"decoder/{name}"] = torch.tensor(value, dtype=dtype)
    return var


def write(ckpt: Checkpoint, path: Union[str, Path]) -> Path:
    """Write a CTranslate2 Whisper directory: model.bin and config.json, and, for a vocabulary size that
    openai-whisper's tokenizer has (every official model), vocabulary.json and tokenizer.json."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    variables = from_openai(ckpt)
    buf = io.BytesIO()
    buf.write(struct.pack("<I", BINARY_VERSION))
    _write_string(buf, SPEC_NAME)
    buf.write(struct.pack("<II", SPEC_REVISION, len(variables)))
    for name in sorted(variables):
        _write_variable(buf, name, variables[name])
    buf.write(struct.pack("<I", 1))  # the output projection shares the token embedding
    _write_string(buf, "decoder/projection/weight")
    _write_string(buf, "decoder/embeddings/weight")
    (path / "model.bin").write_bytes(buf.getvalue())
    config = {"alignment_heads": [list(h) for h in ckpt.alignment_heads or []]}
    n_vocab = ckpt.dims.n_vocab
    try:
        tokens = ctranslate2_vocabulary.vocabulary(n_vocab)
    except ValueError:  # a vocabulary size no openai tokenizer has: only fastwhisper can read the directory
        tokens = None
    if tokens is not None:
        config.update(ctranslate2_vocabulary.config_fields(n_vocab))
        (path / "vocabulary.json").write_text(json.dumps(tokens, indent=0, ensure_ascii=False), encoding="utf-8")
        (path / "tokenizer.json").write_text(
            json.dumps(ctranslate2_vocabulary.tokenizer_json(n_vocab), ensure_ascii=False), encoding="utf-8")
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path
