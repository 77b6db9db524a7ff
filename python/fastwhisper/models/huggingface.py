"""Hugging Face transformers Whisper directories (config.json + *.safetensors or pytorch_model.bin)."""

import json
from pathlib import Path
from typing import Dict, List, Tuple, Union

import torch

from ..errors import ModelLoadError
from . import Checkpoint, dims_from_state_dict

_ATTN = (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"), ("out_proj", "out"))
_LN = ("weight", "bias")


def _layer_map(side: str, i: int) -> List[Tuple[str, str]]:
    """(HF name, openai name) for every tensor of layer i."""
    h, o = f"model.{side}.layers.{i}", f"{side}.blocks.{i}"
    pairs = []
    attns = [("self_attn", "attn")] + ([("encoder_attn", "cross_attn")] if side == "decoder" else [])
    for hf_attn, oa_attn in attns:
        for hp, op in _ATTN:
            pairs.append((f"{h}.{hf_attn}.{hp}.weight", f"{o}.{oa_attn}.{op}.weight"))
            if hp != "k_proj":
                pairs.append((f"{h}.{hf_attn}.{hp}.bias", f"{o}.{oa_attn}.{op}.bias"))
        pairs += [(f"{h}.{hf_attn}_layer_norm.{p}", f"{o}.{oa_attn}_ln.{p}") for p in _LN]
    pairs += [(f"{h}.fc1.{p}", f"{o}.mlp.0.{p}") for p in _LN]
    pairs += [(f"{h}.fc2.{p}", f"{o}.mlp.2.{p}") for p in _LN]
    pairs += [(f"{h}.final_layer_norm.{p}", f"{o}.mlp_ln.{p}") for p in _LN]
    return pairs


def _global_map() -> List[Tuple[str, str]]:
    pairs = [(f"model.encoder.conv{n}.{p}", f"encoder.conv{n}.{p}") for n in (1, 2) for p in _LN]
    pairs += [("model.encoder.embed_positions.weight", "encoder.positional_embedding")]
    pairs += [(f"model.encoder.layer_norm.{p}", f"encoder.ln_post.{p}") for p in _LN]
    pairs += [("model.decoder.embed_tokens.weight", "decoder.token_embedding.weight")]
    pairs += [("model.decoder.embed_positions.weight", "decoder.positional_embedding")]
    pairs += [(f"model.decoder.layer_norm.{p}", f"decoder.ln.{p}") for p in _LN]
    return pairs


def _load_tensors(path: Path) -> Dict[str, torch.Tensor]:
    shards = sorted(path.glob("*.safetensors"))
    if shards:
        from safetensors.torch import load_file

        tensors = {}
        for shard in shards:
            try:
                tensors.update(load_file(str(shard)))
            except Exception as exc:  # safetensors raises its own error types
                raise ModelLoadError(f"{shard}: not a readable safetensors file ({exc})") from None
        return tensors
    binary = path / "pytorch_model.bin"
    if binary.is_file():
        try:
            return torch.load(binary, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelLoadError(f"{binary}: not a readable PyTorch checkpoint ({exc})") from None
    raise ModelLoadError(f"{path}: no *.safetensors or pytorch_model.bin weights in this Hugging Face directory")


def read(path: Union[str, Path]) -> Checkpoint:
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path}: config.json is missing")
    config = json.loads(config_file.read_text())
    tensors = {(k if k.startswith("model.") or k == "proj_out.weight" else "model." + k): v
               for k, v in _load_tensors(path).items()}
    try:
        n_enc, n_dec = int(config["encoder_layers"]), int(config["decoder_layers"])
        heads = (int(config["encoder_attention_heads"]), int(config["decoder_attention_heads"]))
    except KeyError as exc:
        raise ModelLoadError(f"{config_file}: Whisper setting {exc.args[0]} is missing") from None
    pairs = _global_map() + [p for side, n in (("encoder", n_enc), ("decoder", n_dec))
                             for i in range(n) for p in _layer_map(side, i)]
    missing = [h for h, _ in pairs if h not in tensors]
    if missing:
        raise ModelLoadError(f"{path}: {len(missing)} Whisper tensors are missing, e.g. {missing[0]}")
    sd = {o: tensors[h].contiguous() for h, o in pairs}
    dims = dims_from_state_dict(sd, *heads)
    alignment_heads = None
    generation = path / "generation_config.json"
    if generation.is_file():
        alignment_heads = [tuple(h) for h in json.loads(generation.read_text()).get("alignment_heads", [])] or None
    return Checkpoint(dims, sd, alignment_heads)


def write(ckpt: Checkpoint, path: Union[str, Path]) -> Path:
    """Write a Hugging Face Whisper directory (config.json, generation_config.json, model.safetensors)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    d = ckpt.dims
    pairs = _global_map() + [p for side, n in (("encoder", d.n_audio_layer), ("decoder", d.n_text_layer))
                             for i in range(n) for p in _layer_map(side, i)]
    save_file({h: ckpt.state_dict[o].detach().cpu().contiguous() for h, o in pairs}, str(path / "model.safetensors"))
    if d.n_audio_state != d.n_text_state:
        raise ModelLoadError("the Hugging Face layout needs equal encoder and decoder widths")
    config = {
        "architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper",
        "num_mel_bins": d.n_mels, "max_source_positions": d.n_audio_ctx, "d_model": d.n_audio_state,
        "encoder_attention_heads": d.n_audio_head, "encoder_layers": d.n_audio_layer,
        "encoder_ffn_dim": 4 * d.n_audio_state, "vocab_size": d.n_vocab, "max_target_positions": d.n_text_ctx,
        "decoder_attention_heads": d.n_text_head, "decoder_layers": d.n_text_layer,
        "decoder_ffn_dim": 4 * d.n_text_state, "activation_function": "gelu", "tie_word_embeddings": True,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "generation_config.json").write_text(
        json.dumps({"alignment_heads": [list(h) for h in ckpt.alignment_heads or []]}, indent=2))
    return path
