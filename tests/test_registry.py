"""The per-family registry: names in, entries out, and errors that say which names exist."""

from __future__ import annotations

import pytest

from fedunlearn.common.errors import ConfigError, UnknownNameError
from fedunlearn.common.registry import Registry


def _widgets() -> Registry[int]:
    widgets: Registry[int] = Registry("widget")
    widgets.add("alpha", 1)
    widgets.add("beta", 2)
    return widgets


def test_add_get_and_names_in_registration_order() -> None:
    widgets = _widgets()
    widgets.add("aardvark", 3)  # alphabetically first, registered last
    assert widgets.names() == ["alpha", "beta", "aardvark"]
    assert list(widgets) == widgets.names()
    assert widgets.get("beta") == 2
    assert "alpha" in widgets
    assert "gamma" not in widgets


def test_decorator_registers_and_returns_the_entry_unchanged() -> None:
    builders: Registry[object] = Registry("builder")

    @builders.register("square")
    def square(x: int) -> int:
        return x * x

    assert builders.get("square") is square
    assert square(3) == 9
    assert builders.names() == ["square"]


def test_names_is_a_copy() -> None:
    widgets = _widgets()
    widgets.names().append("intruder")
    assert widgets.names() == ["alpha", "beta"]


def test_duplicate_registration_is_refused_and_keeps_the_first() -> None:
    widgets = _widgets()
    with pytest.raises(ValueError, match="alpha"):
        widgets.add("alpha", 99)
    with pytest.raises(ValueError, match="beta"):
        widgets.register("beta")(42)
    assert widgets.get("alpha") == 1
    assert widgets.get("beta") == 2


def test_unknown_name_lists_the_family_and_the_valid_names() -> None:
    with pytest.raises(UnknownNameError) as excinfo:
        _widgets().get("gamma")
    message = str(excinfo.value)
    assert "widget" in message
    assert "'gamma'" in message
    assert "alpha" in message and "beta" in message


def test_unknown_name_is_a_config_error() -> None:
    """The CLI turns every ConfigError into a clean message; a bad name must be one."""
    with pytest.raises(ConfigError):
        Registry("empty").get("anything")


def test_registries_are_independent() -> None:
    first, second = _widgets(), _widgets()
    first.add("gamma", 3)
    assert "gamma" not in second
