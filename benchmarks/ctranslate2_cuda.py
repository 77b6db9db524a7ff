"""CTranslate2's PyPI build on a CUDA 13 machine: it opens CUDA 12's cuBLAS (libcublas.so.12) when it first runs on
a GPU. Where only CUDA 13's libcublas.so.13 exists, a link named libcublas.so.12 pointing to it, in a folder on
LD_LIBRARY_PATH, lets it run (the cuBLAS calls it makes are in both). The dynamic loader reads LD_LIBRARY_PATH when
a process starts, so the benchmark re-executes itself once with the folder added.

    python benchmarks/ctranslate2_cuda.py          # prints the folder to put on LD_LIBRARY_PATH (made if needed)
"""

import ctypes
import glob
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

LINK_DIR = Path(tempfile.gettempdir()) / "fastwhisper-ctranslate2-cuda"
CUBLAS_13_GLOBS = ("/usr/local/cuda*/targets/x86_64-linux/lib/libcublas.so.13", "/usr/local/cuda*/lib64/libcublas.so.13",
                   "/usr/lib/x86_64-linux-gnu/libcublas.so.13")


def loadable(name: str) -> bool:
    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return False


def cublas13_candidates() -> List[str]:
    found = [p for pattern in CUBLAS_13_GLOBS for p in sorted(glob.glob(pattern))]
    spec = importlib.util.find_spec("nvidia")  # pip's CUDA wheels (torch's own cuBLAS)
    for root in (spec.submodule_search_locations or []) if spec else []:
        found += sorted(glob.glob(os.path.join(root, "**", "libcublas.so.13"), recursive=True))
    return found


def link_dir() -> Optional[Path]:
    """The folder holding libcublas.so.12 (and libcublasLt.so.12) links to CUDA 13's, made if needed; None when
    CUDA 12's cuBLAS loads already or no CUDA 13 cuBLAS is found."""
    if loadable("libcublas.so.12"):
        return None
    candidates = cublas13_candidates()
    if not candidates:
        return None
    target = Path(candidates[0])
    LINK_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("libcublas", "libcublasLt"):
        source = target.parent / f"{name}.so.13"
        for version in ("12", "13"):  # .13 too: libcublas.so.13 opened from this folder finds its libcublasLt here
            link = LINK_DIR / f"{name}.so.{version}"
            if source.exists() and not link.is_symlink():
                link.symlink_to(source)
    return LINK_DIR


def reexec_with_cublas12(argv: List[str]) -> None:
    """Re-executes this process with the link folder on LD_LIBRARY_PATH when CTranslate2 is installed, the run may
    use a GPU, and libcublas.so.12 does not load; returns otherwise (also when the folder is on the path already)."""
    if "--render" in argv or any(a in ("--device=cpu",) for a in argv) or (
            "--device" in argv and argv.index("--device") + 1 < len(argv) and argv[argv.index("--device") + 1] == "cpu"):
        return
    if importlib.util.find_spec("ctranslate2") is None:
        return
    paths = os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    if str(LINK_DIR) in paths:
        return
    folder = link_dir()
    if folder is None:
        return
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([str(folder)] + [p for p in paths if p])
    print(f"CTranslate2: libcublas.so.12 -> {os.readlink(folder / 'libcublas.so.12')}; re-running with "
          f"LD_LIBRARY_PATH={os.environ['LD_LIBRARY_PATH']}", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable] + argv)


if __name__ == "__main__":
    folder = link_dir()
    print(folder if folder else ("libcublas.so.12 loads already" if loadable("libcublas.so.12")
                                 else "no libcublas.so.13 found"))
