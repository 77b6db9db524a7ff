"""openai-whisper `.pt` checkpoints: {"dims": {...}, "model_state_dict": {...}}."""

import dataclasses
import pickle
import zipfile
from pathlib import Path
from typing import Union

import torch
from whisper.model import ModelDimensions

from ..errors import ModelLoadError
from . import Checkpoint


def read(path: Union[str, Path]) -> Checkpoint:
    path = Path(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a readable openai-whisper checkpoint (truncated or corrupt?): {exc}") from None
    if not isinstance(raw, dict) or "dims" not in raw or "model_state_dict" not in raw:
        raise ModelLoadError(f"{path}: not an openai-whisper checkpoint (expected 'dims' and 'model_state_dict')")
    try:
        dims = ModelDimensions(**raw["dims"])
    except TypeError as exc:
        raise ModelLoadError(f"{path}: bad model dimensions in checkpoint: {exc}") from None
    return Checkpoint(dims, dict(raw["model_state_dict"]))


def write(ckpt: Checkpoint, path: Union[str, Path]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": dataclasses.asdict(ckpt.dims), "model_state_dict": ckpt.state_dict}, path)
    return path
