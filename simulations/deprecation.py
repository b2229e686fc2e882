"""Old CLI spellings, kept for one release: they still work, and say once on stderr what replaces them.

A line on stderr, not a Python warning: warnings filters would hide it, and
stdout stays what scripts parse (a request id, JSON).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TypeVar

import typer

from fedunlearn.common.errors import ConfigError

__all__ = ["add_old_spellings", "renamed_option"]

T = TypeVar("T")


def _warn(old: str, new: str) -> None:
    typer.echo(f"warning: {old} is deprecated and goes in the next release; use {new}", err=True)


def _deprecated(command: Callable[..., None], *, old: str, new: str) -> Callable[..., None]:
    """``command`` under its old spelling: warn, then do the same thing (functools.wraps keeps the
    signature typer reads the options from)."""

    @functools.wraps(command)
    def warn_then_run(*args: object, **kwargs: object) -> None:
        _warn(f"`{old}`", f"`{new}`")
        command(*args, **kwargs)

    return warn_then_run


def add_old_spellings(app: typer.Typer, spellings: Mapping[str, tuple[str, Callable[..., None]]]) -> None:
    """Each ``old: (new, command)`` as a hidden command of ``app``, e.g. ``forget: ("node forget", forget)``."""
    for old, (new, command) in spellings.items():
        old_line, new_line = f"{app.info.name} {old}", f"{app.info.name} {new}"
        app.command(old, hidden=True, help=f"Deprecated: use `{new_line}`.")(
            _deprecated(command, old=old_line, new=new_line))


def renamed_option(value: T | None, old_value: T | None, *, old: str, new: str) -> T | None:
    """The option's value, given under its new name ``new`` or (with a warning) its old name ``old``."""
    if old_value is None:
        return value
    if value is not None:
        raise ConfigError(f"{old} is the old spelling of {new}; give {new} only")
    _warn(old, new)
    return old_value
