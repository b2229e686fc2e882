"""Untrusted text around a node: bounded on the way in, clipped in errors, made inert on the way out.

A request's reason (and a rejection's) comes from whoever files it: a DSAR portal,
a gRPC caller, a shell. Unbounded, a few large reasons made every gRPC ``List``
exceed the message limit for good; echoed in an error, a long id turned
``NOT_FOUND`` into ``RESOURCE_EXHAUSTED``; shown raw, ANSI escapes reached the
terminal. So text is checked once when stored (``checked_reason``), clipped when a
message repeats it (``clip``) and escaped when shown (``printable``), which also
covers rows stored before these checks existed.
"""

from __future__ import annotations

import unicodedata

from fedunlearn.common.errors import RequestError

__all__ = ["MAX_REASON_CHARS", "checked_reason", "clip", "printable"]

MAX_REASON_CHARS = 1000  # a reason is a sentence or a ticket reference, not a document
_CLIP_CHARS = 64
# Cc: C0/C1 controls (ESC starts ANSI sequences); Cf: format characters (bidi overrides,
# zero-width marks) that make shown text differ from stored text; Zl/Zp: line breaks.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def checked_reason(text: str, owner: str = "a forget request") -> str:
    """``text`` stripped, if it is non-empty, valid UTF-8 and at most MAX_REASON_CHARS; else RequestError.

    ``owner`` names what the reason is for in the message ("a forget request", "a rejection").
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in argv arrive as lone surrogates
        raise RequestError(f"the reason given for {owner} is not valid UTF-8 text; nothing was recorded") from None
    stripped = text.strip()
    if not stripped:
        raise RequestError(f"{owner} needs a reason, e.g. a ticket reference; nothing was recorded")
    if len(stripped) > MAX_REASON_CHARS:
        raise RequestError(f"the reason given for {owner} has {len(stripped)} characters, more than "
                           f"{MAX_REASON_CHARS}; give a short reference (a ticket id) instead; nothing was recorded")
    return stripped


def clip(value: object, limit: int = _CLIP_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters: what an error message may repeat of caller input."""
    shown = repr(value)
    if len(shown) <= limit:
        return shown
    return f"{shown[:limit]}... ({len(shown)} characters)"


def printable(text: str) -> str:
    """``text`` with every control, format or line-break character written as its escape (``\\x1b``)."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in _HIDDEN else ch
                   for ch in text)
