"""An OpenAI-compatible speech-to-text server on fastwhisper, with continuous batching (`pip install
'fastwhisper[server]'`, then `fastwhisper-serve --model large-v3`).

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    text = client.audio.transcriptions.create(model="large-v3", file=open("speech.flac", "rb")).text

Modules: config (ServerConfig: model names, batch size, decoder, limits), fields (the request's form fields as
whisper.transcribe options), service (admission, upload decoding, one engine job per request), formats (json,
text, srt, vtt, verbose_json, server-sent events), metrics (Prometheus), app (the FastAPI routes), runner
(uvicorn with a draining shutdown), cli (the command).

Each request is a job of the model's engine (fastwhisper.engine.submit): the windows of all requests in flight
are encoded and decoded together, and each request gets what model.transcribe() returns for its audio alone with
the same options.
"""

from .config import ServerConfig

__all__ = ["ServerConfig", "create_app"]


def create_app(model, config: ServerConfig):
    """The FastAPI application serving `model` (imports FastAPI only when called)."""
    from .app import create_app as _create_app

    return _create_app(model, config)
