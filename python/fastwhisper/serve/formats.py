"""A transcription result (the dict whisper.transcribe returns) in OpenAI's response formats, and the
server-sent events of a streamed request."""

import io
import json
from typing import Optional

from fastapi.responses import JSONResponse, PlainTextResponse, Response
from whisper.tokenizer import LANGUAGES
from whisper.utils import WriteSRT, WriteVTT

from .fields import AudioRequest

SEGMENT_FIELDS = ("id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio",
                  "no_speech_prob")
WRITER_OPTIONS = {"max_line_width": None, "max_line_count": None, "highlight_words": False}


def render(result: dict, request: AudioRequest, duration: float) -> Response:
    """The answer to `request` (its response_format) for `result`, the transcription of `duration` s of audio."""
    fmt = request.response_format
    text = result["text"].strip()
    if fmt == "json":
        body = {"text": text}
        if request.task == "transcribe":
            body["usage"] = usage(duration)
        return JSONResponse(body)
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt in ("srt", "vtt"):
        writer = (WriteSRT if fmt == "srt" else WriteVTT)(output_dir=".")
        out = io.StringIO()
        writer.write_result(result, out, WRITER_OPTIONS)
        media = "application/x-subrip" if fmt == "srt" else "text/vtt"
        return PlainTextResponse(out.getvalue(), media_type=media)
    return JSONResponse(verbose_json(result, request, duration))


def verbose_json(result: dict, request: AudioRequest, duration: float) -> dict:
    body = {"task": request.task, "language": language_name(result.get("language")), "duration": duration,
            "text": result["text"].strip()}
    if "segment" in request.granularities:
        body["segments"] = [{k: segment[k] for k in SEGMENT_FIELDS} for segment in result["segments"]]
    if request.words:
        body["words"] = [{"word": w["word"], "start": w["start"], "end": w["end"]}
                         for segment in result["segments"] for w in segment.get("words", [])]
    if request.task == "transcribe":
        body["usage"] = usage(duration)
    return body


def usage(duration: float) -> dict:
    return {"type": "duration", "seconds": duration}


def language_name(code: Optional[str]) -> Optional[str]:
    """OpenAI's verbose_json names the language in English words ("english"), whisper's result by its code."""
    return LANGUAGES.get(code, code) if code else code


# ---- server-sent events (stream=true): one delta per finished segment, then the whole text

def sse(event: dict) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


def segment_event(segment: dict) -> bytes:
    """transcript.text.delta: the segment's text, with its times (fields OpenAI's client keeps as extras)."""
    return sse({"type": "transcript.text.delta", "delta": segment["text"], "start": segment["start"],
                "end": segment["end"]})


def done_event(result: dict) -> bytes:
    return sse({"type": "transcript.text.done", "text": result["text"].strip()})


def error_event(body: dict) -> bytes:
    """An error after the stream began: OpenAI's client raises it as an APIError."""
    return sse(body)
