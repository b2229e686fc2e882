"""Untrusted text: reasons bounded when stored, clipped when echoed, inert when shown."""

from __future__ import annotations

import pytest

from fedunlearn.common.errors import RequestError
from fedunlearn.common.nodes.text import MAX_REASON_CHARS, checked_reason, clip, printable


def test_checked_reason_strips_and_bounds() -> None:
    assert checked_reason("  DSAR #1 \n") == "DSAR #1"
    assert checked_reason("é" * MAX_REASON_CHARS) == "é" * MAX_REASON_CHARS
    with pytest.raises(RequestError, match=r"a rejection needs a reason"):
        checked_reason("\n", "a rejection")
    with pytest.raises(RequestError, match=rf"{MAX_REASON_CHARS + 1} characters"):
        checked_reason("é" * (MAX_REASON_CHARS + 1))
    with pytest.raises(RequestError, match="not valid UTF-8"):
        checked_reason("bad \udcff byte")


def test_clip_keeps_short_values_and_cuts_long_ones() -> None:
    assert clip("req-1") == "'req-1'"
    long = clip("a" * 10_000)
    assert long.startswith("'aaa") and long.endswith("... (10002 characters)") and len(long) < 100


@pytest.mark.parametrize(("text", "shown"), [
    ("\x1b[31mred", "\\x1b[31mred"),
    ("\x1b]8;;http://evil\x07click", "\\x1b]8;;http://evil\\x07click"),
    ("line\nbreak\r", "line\\nbreak\\r"),
    ("abc\u202edcba", "abc\\u202edcba"),  # right-to-left override
    ("[/x] [link=http://evil]café[/link]", "[/x] [link=http://evil]café[/link]"),  # markup is rich's business
])
def test_printable_escapes_what_a_terminal_would_act_on(text: str, shown: str) -> None:
    assert printable(text) == shown
