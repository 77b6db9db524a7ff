"""The server's settings: which model it serves under which names, how it runs it, and its limits."""

import dataclasses
from typing import Dict, Optional, Tuple

from ..engine import check_batch_wait

MB = 1024 * 1024


@dataclasses.dataclass
class ServerConfig:
    """Settings of one server (one model).

    model_name: the id `/v1/models` lists and requests name in their `model` field; `aliases` are the other names
    a request may give (whisper-1, so that clients written for OpenAI's API work unchanged).
    batch_size: the most windows the engine encodes or decodes in one call (every request joins the same batch).
    decoder: "torch" or "cpp" (fastwhisper.transcribe's decoder).
    fixed_options: whisper.transcribe options applied to every request, over the request's own fields (for
    example a fixed token budget for a benchmark: sample_len, suppress_tokens, temperature=0.0).
    batch_wait: how long a round may wait for clients to come back with their next request, as a fraction of the
    last round's length (fastwhisper.engine.set_batch_wait); 0 starts each round at once.
    Limits: max_upload_bytes (413), max_audio_seconds (413), max_queue requests admitted at once, from the upload
    to the last byte of the answer (429 beyond it).
    """

    model_name: str
    aliases: Tuple[str, ...] = ("whisper-1",)
    batch_size: int = 16
    decoder: str = "torch"
    fixed_options: Dict[str, object] = dataclasses.field(default_factory=dict)
    max_upload_bytes: int = 25 * MB  # OpenAI's own limit on an upload
    max_audio_seconds: float = 3 * 3600.0
    max_queue: int = 256
    batch_wait: float = 0.0
    decode_threads: Optional[int] = None  # threads that decode uploads (default: the CPU count, at most 8)

    def __post_init__(self):
        for name in ("batch_size", "max_upload_bytes", "max_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.batch_wait = check_batch_wait(self.batch_wait)
        if not self.max_audio_seconds > 0:
            raise ValueError(f"max_audio_seconds must be positive, got {self.max_audio_seconds!r}")

    @property
    def model_names(self) -> Tuple[str, ...]:
        return (self.model_name,) + tuple(a for a in self.aliases if a != self.model_name)
