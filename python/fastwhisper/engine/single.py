"""fastwhisper.transcribe: openai-whisper's long-form transcription, with fastwhisper's audio loading."""

import functools

from whisper.transcribe import transcribe as whisper_transcribe

from ..audio import load_audio
from ..decoder import decode
from ..encoder import FastAudioEncoder, accelerate
from ..decoder import check_decoder


def transcribe(model, audio, *, decoder: str = "torch", batch_size: int = 1, **options) -> dict:
    """Transcribe `audio` (a path, or a 16 kHz waveform as numpy array / torch tensor) with `model`.

    decoder: "torch" (openai-whisper's PyTorch decoder) or "cpp" (fastwhisper's C++ decoding loop).
    Takes every option of `whisper.transcribe` (temperature, beam_size, word_timestamps, ...) and
    returns the same dict (text, segments, language). Audio errors raise AudioLoadError.
    batch_size > 1: through `transcribe_batch`, which decodes up to that many windows of the audio together
    where they cannot depend on each other (without_timestamps=True, condition_on_previous_text=False, no
    carry_initial_prompt or word timestamps) and gives the same result; otherwise it decodes one window at
    a time as well.
    """
    if batch_size != 1:
        from .batch import transcribe_batch

        [result] = transcribe_batch(model, [audio], batch_size=batch_size, decoder=decoder, **options)
        if isinstance(result, Exception):
            raise result
        return result
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
