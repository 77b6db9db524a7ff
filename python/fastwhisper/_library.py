"""Loads the compiled extension, which registers every op under ``torch.ops.fastwhisper``."""

import torch

try:
    from . import _C  # noqa: F401  (import for its side effect: op registration)
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError(
        "fastwhisper's compiled extension (fastwhisper._C) could not be loaded: "
        f"{exc}. Reinstall with `pip install --no-build-isolation .` against the torch you run."
    ) from exc

from . import _build_info

if torch.__version__.split("+")[0] != _build_info.TORCH_VERSION.split("+")[0]:
    raise ImportError(
        f"fastwhisper was built against torch {_build_info.TORCH_VERSION} but torch {torch.__version__} "
        "is installed; rebuild it with `pip install --no-build-isolation .`"
    )

WITH_CUDA: bool = bool(_C.with_cuda)
