"""fastwhisper: OpenAI Whisper with a C++/CUDA encoder registered as PyTorch ops.

    import fastwhisper
    model = fastwhisper.load_model("tiny.en")   # openai name, .pt file, HF or CTranslate2 directory
    result = model.transcribe("speech.flac")    # same result dict as openai-whisper
    results = model.transcribe_batch(["a.flac", "b.wav"], batch_size=8)  # windows of several files together
    fastwhisper.accelerate(whisper_model)       # or: swap the encoder of an openai-whisper model
    torch.ops.fastwhisper.encoder_forward(...)  # the ops themselves (see fastwhisper.ops)
"""

from . import ops
from ._library import WITH_CUDA
from ._version import __version__
from .audio import load_audio
from .encoder import FastAudioEncoder, accelerate
from .engine import decode, transcribe, transcribe_batch
from .errors import AudioLoadError, FastWhisperError, ModelLoadError
from .loading import available_models, load_model, save_checkpoint
from .model import FastWhisper

__all__ = [
    "FastAudioEncoder", "FastWhisper", "accelerate", "load_model", "save_checkpoint", "available_models",
    "transcribe", "transcribe_batch", "decode", "load_audio", "ops", "WITH_CUDA", "AudioLoadError", "ModelLoadError",
    "FastWhisperError", "__version__",
]
