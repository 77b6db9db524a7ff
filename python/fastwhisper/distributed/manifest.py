"""manifest.json in an output folder: which inputs are done, by content hash, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, Optional

from ..files import write_atomically

MANIFEST = "manifest.json"


def file_sha256(path: str) -> Optional[str]:
    """The file's SHA-256 in hex, or None when it cannot be read (the worker then reports why)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


class Manifest:
    """{input path: {"sha256", "status": "done" | "failed", "error", "audio_s", "outputs", "worker"}}."""

    def __init__(self, output_dir: str, entries: Optional[Dict[str, dict]] = None):
        self.output_dir = output_dir
        self.entries: Dict[str, dict] = entries or {}

    @classmethod
    def load(cls, output_dir: str) -> "Manifest":
        path = os.path.join(output_dir, MANIFEST)
        try:
            with open(path, encoding="utf-8") as f:
                entries = json.load(f)["files"]
        except FileNotFoundError:
            entries = {}
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a fastwhisper manifest ({exc}); move it away to start afresh") from exc
        return cls(output_dir, entries)

    def is_done(self, path: str, sha256: Optional[str]) -> bool:
        """Done with this very content, and every output file it wrote is still there."""
        entry = self.entries.get(os.path.abspath(path))
        return (sha256 is not None and entry is not None and entry.get("status") == "done"
                and entry.get("sha256") == sha256
                and all(os.path.exists(os.path.join(self.output_dir, name)) for name in entry.get("outputs", [])))

    def record(self, path: str, **fields) -> None:
        self.entries[os.path.abspath(path)] = fields

    def save(self) -> None:
        write_atomically(self.output_dir, MANIFEST,
                         lambda f: json.dump({"files": self.entries}, f, indent=1, sort_keys=True))
