"""The README is the front door: its two commands are the ones CI and the main job run, and its command
table names every command the CLI has (options live in docs/cli.md)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import typer

from fedunlearn.simulations.cli import app

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _commands(group: click.Group, prefix: str = "fedunlearn") -> set[str]:
    names: set[str] = set()
    for name, command in group.commands.items():
        if command.hidden:
            continue  # the old spellings, kept for one release
        if isinstance(command, click.Group):
            names |= _commands(command, f"{prefix} {name}")
        else:
            names.add(f"{prefix} {name}")
    return names


def test_the_two_commands_are_what_ci_and_the_scripts_run() -> None:
    assert "    bash scripts/main.sh\n" in README and "    bash scripts/test.sh\n" in README
    ci = [line for line in (REPO / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "bash scripts/test.sh"  # exactly the README's test command
    assert "pytest" in (REPO / "scripts/test.sh").read_text()


def test_the_command_table_lists_every_command_and_nothing_else() -> None:
    cli = typer.main.get_command(app)
    assert isinstance(cli, click.Group)
    table = set(re.findall(r"^\| `(fedunlearn [a-z -]+?)` \|", README, flags=re.MULTILINE))
    assert table == _commands(cli)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_local_link_and_anchor_resolves() -> None:
    for page in (REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))):
        for target, anchor in re.findall(r"\]\(([^)#:]*)(?:#([^)]*))?\)", page.read_text()):
            path = page.parent / target if target else page
            assert path.exists(), f"{page.name} links to missing {target}"
            if anchor and path.suffix == ".md":
                assert anchor in _anchors(path), f"{page.name} links to {target}#{anchor}: no such heading"
