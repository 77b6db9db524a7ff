"""The fields of a transcription or translation request (multipart form, as OpenAI's audio API takes them),
checked and turned into whisper.transcribe options. A bad field is a 400 that names it."""

import dataclasses
import math
from typing import Dict, List, Optional, Tuple

from starlette.datastructures import FormData, UploadFile
from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

from .config import ServerConfig
from .errors import APIError, bad_field

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("segment", "word")
TEMPERATURE_STEP = 0.2  # the fallback's step above a request's temperature (whisper's CLI default)
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


@dataclasses.dataclass
class AudioRequest:
    upload: UploadFile
    task: str  # "transcribe" or "translate"
    response_format: str
    stream: bool
    granularities: Tuple[str, ...]
    options: Dict[str, object]  # keyword arguments of fastwhisper.engine.submit / whisper.transcribe

    @property
    def words(self) -> bool:
        return "word" in self.granularities


def parse_request(form: FormData, task: str, config: ServerConfig, multilingual: bool) -> AudioRequest:
    upload = form.get("file")
    if upload is None:
        raise bad_field("file", "the request has no 'file' field: send the audio as a multipart file named 'file'",
                        code="missing_required_parameter")
    if not isinstance(upload, UploadFile):
        raise bad_field("file", "the 'file' field must be a file upload (multipart file), not a text field")

    model = _text(form, "model")
    if model is not None and model not in config.model_names:
        raise bad_field("model", f"unknown model {model!r}: this server serves {', '.join(config.model_names)}",
                        code="model_not_found")

    response_format = _text(form, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise bad_field("response_format", f"unknown response_format {response_format!r}: choose one of "
                        f"{', '.join(RESPONSE_FORMATS)}")

    granularities = tuple(dict.fromkeys(form.getlist("timestamp_granularities[]")
                                        + form.getlist("timestamp_granularities")))
    for granularity in granularities:
        if granularity not in GRANULARITIES:
            raise bad_field("timestamp_granularities[]", f"unknown timestamp granularity {granularity!r}: choose "
                            f"from {', '.join(GRANULARITIES)}")
    if "word" in granularities and response_format != "verbose_json":
        raise bad_field("timestamp_granularities[]", "word timestamps need response_format=verbose_json")

    options: Dict[str, object] = {"task": task}
    language = _language(_text(form, "language"), multilingual)
    if language is not None:
        options["language"] = language
    prompt = _text(form, "prompt")
    if prompt:
        options["initial_prompt"] = prompt
    temperature = _temperature(_text(form, "temperature"))
    if temperature is not None:
        options["temperature"] = temperature
    if "word" in granularities:
        options["word_timestamps"] = True
    options.update(config.fixed_options)
    return AudioRequest(upload=upload, task=task, response_format=response_format, stream=_stream(form),
                        granularities=granularities or ("segment",), options=options)


def _text(form: FormData, name: str) -> Optional[str]:
    values = form.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise bad_field(name, f"the field {name!r} is given {len(values)} times")
    value = values[0]
    if not isinstance(value, str):
        raise bad_field(name, f"the field {name!r} must be text, not a file")
    return value.strip()


def _language(value: Optional[str], multilingual: bool) -> Optional[str]:
    """An ISO-639-1 code (or a language's English name, as whisper takes it), as whisper's code; English for an
    English-only model, as the `fastwhisper` command does."""
    if not value:
        return None
    code = value.lower()
    code = TO_LANGUAGE_CODE.get(code, code)
    if code not in LANGUAGES:
        raise bad_field("language", f"unknown language {value!r}: give an ISO-639-1 code such as 'en' or 'de'")
    return code if multilingual else "en"


def _temperature(value: Optional[str]):
    """OpenAI's temperature: 0 (the default) means whisper's fallback from 0 to 1 in steps of 0.2; t > 0 starts the
    fallback at t (whisper's CLI: np.arange(t, 1.0 + 1e-6, 0.2))."""
    if value is None or value == "":
        return None
    try:
        t = float(value)
    except ValueError:
        raise bad_field("temperature", f"temperature must be a number between 0 and 1, got {value!r}") from None
    if not math.isfinite(t) or not 0.0 <= t <= 1.0:
        raise bad_field("temperature", f"temperature must be between 0 and 1, got {value}")
    if t == 0.0:
        return None  # whisper.transcribe's default (0.0, 0.2, ..., 1.0), exactly
    temperatures: List[float] = []
    while t <= 1.0 + 1e-6:
        temperatures.append(round(t, 6))
        t += TEMPERATURE_STEP
    return tuple(temperatures)


def _stream(form: FormData) -> bool:
    value = _text(form, "stream")
    if value is None:
        return False
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise bad_field("stream", f"stream must be true or false, got {value!r}")


def check_upload_size(size: int, config: ServerConfig) -> None:
    if size > config.max_upload_bytes:
        raise APIError(413, f"the upload is {size} bytes, over this server's limit of {config.max_upload_bytes} "
                       "bytes", param="file", code="file_too_large")
