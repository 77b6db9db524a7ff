"""fastwhisper.transcribe: openai-whisper's long-form transcription, with fastwhisper's audio loading."""

import functools

from whisper.transcribe import transcribe as whisper_transcribe

from .audio import load_audio
from .decoding import decode
from .encoder import FastAudioEncoder, accelerate
from .model import check_decoder


def transcribe(model, audio, *, decoder: str = "torch", **options) -> dict:
    """Transcribe `audio` (a path, or a 16 kHz waveform as numpy array / torch tensor) with `model`.

    decoder: "torch" (openai-whisper's PyTorch decoder) or "cpp" (fastwhisper's C++ decoding loop).
    Takes every option of `whisper.transcribe` (temperature, beam_size, word_timestamps, ...) and
    returns the same dict (text, segments, language). Audio errors raise AudioLoadError.
    """
    check_decoder(decoder)
    if not isinstance(model.encoder, FastAudioEncoder):
        accelerate(model)
    waveform = load_audio(audio)
    if decoder == "torch":
        return whisper_transcribe(model, waveform, **options)
    # whisper.transcribe calls model.decode(segment, options) per window: route it to the C++ loop
    model.decode = functools.partial(decode, model, decoder=decoder)
    try:
        return whisper_transcribe(model, waveform, **options)
    finally:
        del model.decode
