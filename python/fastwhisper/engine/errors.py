"""How a job's failure reaches its caller: a CUDA out-of-memory error becomes one clear error that says what
to change; any other error goes through as raised."""

import torch

from ..errors import FastWhisperError


class BatchOutOfMemoryError(torch.OutOfMemoryError, FastWhisperError):
    """The GPU ran out of memory for the windows of one round; a smaller batch_size needs less. Still a
    torch.OutOfMemoryError, for callers that catch that."""


def describe_failure(error: BaseException, batch_size: int) -> BaseException:
    """The exception a job fails with. A CUDA out-of-memory error (torch.OutOfMemoryError) becomes a
    BatchOutOfMemoryError suggesting a smaller batch_size, chained to the original, and the allocator's cached
    blocks are released so that the next call (the model stays usable) starts from a clean cache."""
    if not isinstance(error, torch.OutOfMemoryError) or isinstance(error, BatchOutOfMemoryError):
        return error
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    first_line = (str(error).strip().splitlines() or ["out of memory"])[0]
    smaller = f"batch_size={max(1, batch_size // 2)}" if batch_size > 1 else "a GPU with more free memory, " \
        "a smaller model or dtype=torch.float16"
    wrapped = BatchOutOfMemoryError(
        f"CUDA out of memory while transcribing with batch_size={batch_size}: try {smaller} "
        f"(the model is still usable). CUDA said: {first_line}")
    wrapped.__cause__ = error
    return wrapped
