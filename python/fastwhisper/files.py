"""Writing a file so that a reader sees the old one or the whole new one, never a part."""

import os
import tempfile
from typing import Callable, TextIO


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(directory: str, name: str, write: Callable[[TextIO], None]) -> None:
    """write(f) into a temporary file in `directory`, then rename it over `name` there (UTF-8 text, with the
    permissions open() would give it). The temporary file is removed if anything fails."""
    f = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=directory, prefix=f".{name}.", suffix=".tmp",
                                    delete=False)
    try:
        with f:
            write(f)
        os.chmod(f.name, 0o666 & ~_umask())  # as open() would have made it, not mkstemp's 0600
        os.replace(f.name, os.path.join(directory, name))
    except BaseException:
        try:
            os.remove(f.name)
        except OSError:
            pass
        raise
