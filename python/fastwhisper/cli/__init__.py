"""Command-line programs: `fastwhisper` (transcribe files)."""

from .main import main

__all__ = ["main"]
