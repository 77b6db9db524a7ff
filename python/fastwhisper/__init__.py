"""fastwhisper: OpenAI Whisper with a C++/CUDA encoder registered as PyTorch ops.

    import fastwhisper
    fastwhisper.accelerate(whisper_model)       # hybrid mode: fast encoder + stock decoder
    enc = fastwhisper.FastAudioEncoder(80, 1500, 384, 6, 4)   # drop-in AudioEncoder
    torch.ops.fastwhisper.encoder_forward(...)  # the ops themselves (see fastwhisper.ops)
"""

from . import ops
from ._library import WITH_CUDA
from .encoder import FastAudioEncoder, accelerate

__version__ = "0.1.0"
__all__ = ["FastAudioEncoder", "accelerate", "ops", "WITH_CUDA", "__version__"]
