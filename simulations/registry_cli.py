"""``fedunlearn list``: what can be named on the command line and in scenario files.

The registries live beside their torch code, so they are imported when the names are asked for.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["list_registries", "registry_names"]


def registry_names() -> dict[str, list[str]]:
    """Each family's registered names, as `fedunlearn list --json` prints them."""
    from fedunlearn.common.audit.attacks import ATTACKS
    from fedunlearn.common.data.datasets import DATASETS
    from fedunlearn.common.data.partition import PARTITIONERS
    from fedunlearn.common.models import MODELS
    from fedunlearn.common.unlearning import METHODS
    from fedunlearn.common.unlearning.leakage import LEAKAGE

    return {
        "datasets": DATASETS.names(),
        "models": MODELS.names(),
        "partitioners": PARTITIONERS.names(),
        "methods": METHODS.names(),
        "leakage approximators": LEAKAGE.names(),
        "audit attacks": ATTACKS.names(),
    }


def list_registries(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the registered datasets, models, partitioners, methods, approximators and attacks."""
    names = registry_names()
    if as_json:
        typer.echo(json.dumps(names, indent=2))
        return
    table = Table("family", "names")
    for family, members in names.items():
        table.add_row(family, ", ".join(members))
    Console().print(table)
