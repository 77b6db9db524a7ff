"""The audio encoder: FastAudioEncoder (whisper's AudioEncoder on fastwhisper's ops) and accelerate()."""

from .module import FastAudioEncoder, accelerate

__all__ = ["FastAudioEncoder", "accelerate"]
