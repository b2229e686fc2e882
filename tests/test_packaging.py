"""The install puts the project under the ``fedunlearn`` namespace, and nothing reaches past it.

A bare ``import common`` works from the checkout's root (it is on ``sys.path``) but not where
fedunlearn is installed, and beside ``fedunlearn.common`` it would load every module twice.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("common", "client", "server", "simulations")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _python_files() -> list[Path]:
    return sorted(path for folder in (*TOP_LEVEL, "tests", "scripts") for path in (ROOT / folder).rglob("*.py"))


def _bare_imports(path: Path) -> list[str]:
    """The modules ``path`` imports by a top-level folder's bare name."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return [name for name in names if name.partition(".")[0] in TOP_LEVEL]


def test_every_package_folder_is_installed_under_the_namespace() -> None:
    folders = {".".join(("fedunlearn", *init.parent.relative_to(ROOT).parts))
               for top in TOP_LEVEL for init in (ROOT / top).rglob("__init__.py")}
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"fedunlearn": "."}
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == folders


def test_no_module_imports_a_bare_top_level_name() -> None:
    offenders = {str(path.relative_to(ROOT)): names for path in _python_files() if (names := _bare_imports(path))}
    assert offenders == {}


def test_entry_points_and_flower_components_name_the_namespace() -> None:
    project, components = PYPROJECT["project"], PYPROJECT["tool"]["flwr"]["app"]["components"]
    targets = [*project["scripts"].values(), *components.values()]
    assert targets and all(target.startswith("fedunlearn.") for target in targets)
