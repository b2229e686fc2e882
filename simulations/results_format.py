"""How the results pages write a figure, a commit and a link: one spelling for every generated table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["bench_label", "commit_cell", "link", "num", "span"]


def commit_cell(result: Mapping[str, Any]) -> str:
    """The commit a JSON records, shortened, or "not recorded" for files older than recording one."""
    commit = result.get("commit")
    if not commit:
        return "not recorded"
    dirty = result.get("dirty", result.get("worktree_dirty"))  # bench.json and tuning.json say worktree_dirty
    return f"`{commit[:12]}`" + (" (uncommitted changes)" if dirty else "")


def bench_label(bench: Mapping[str, Any]) -> str:
    """"dataset / model / `forget`", and the device where it was not a CPU (older files ran on one)."""
    device = "" if bench.get("device", "cpu") == "cpu" else f" on {bench['device']}"
    return f"{bench['dataset']} / {bench['model']} / `{bench['forget']}`{device}"


def num(value: float | None, digits: int = 3) -> str:
    """A figure with ``digits`` decimals; "-" where there is none."""
    return "-" if value is None else f"{value:.{digits}f}"


def span(values: Iterable[float | None], digits: int = 2, fmt: str = "f") -> str:
    """'lo - hi' (or one value) over the values present."""
    present = sorted(v for v in values if v is not None)
    if not present:
        return "-"
    lo, hi = f"{present[0]:.{digits}{fmt}}", f"{present[-1]:.{digits}{fmt}}"
    return lo if lo == hi else f"{lo} - {hi}"


def link(root: Path, path: Path, text: str | None = None) -> str:
    """A link to ``path`` relative to the page, named after its folder; bare text when the page is missing."""
    text = text or path.parent.name
    return f"[{text}]({path.relative_to(root).as_posix()})" if path.exists() else text
