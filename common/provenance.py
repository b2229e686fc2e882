"""Where a result came from: every results JSON records the commit (and whether the tree differed
from it) and the command that made it, so a table can be traced to code."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

__all__ = ["git_commit", "process_command"]


def process_command() -> str:
    """The command line this process was started with, its program by name (``fedunlearn simulate ...``,
    ``flwr-serverapp ...``), as a reader would type it again."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "unknown"


def git_commit() -> tuple[str, bool]:
    """(HEAD of the checkout this code runs from, whether tracked files differ from it); ("unknown", False)
    outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
