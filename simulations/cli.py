"""The ``fedunlearn`` command: one typer app, one module per command group.

Project errors are turned into a one-line message and exit code 2 here, and
nowhere else.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from client import cli as client_cli
from common.errors import FedUnlearnError
from simulations import bench_cli, edge_cli, export_cli, registry_cli, simulate_cli

__all__ = ["app", "main"]

app = typer.Typer(
    name="fedunlearn",
    help="Federated and edge machine unlearning: ReMI, audited by membership inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("bench")(bench_cli.bench)
app.command("list")(registry_cli.list_registries)
app.command("simulate")(simulate_cli.simulate_command)
app.command("scale")(simulate_cli.scale_command)
app.command("export")(export_cli.export_command)
app.command("predict")(edge_cli.predict_command)
app.command("bench-edge")(edge_cli.bench_edge_command)
app.add_typer(client_cli.node_app, name="node")
app.command("forget")(client_cli.forget)
app.command("requests")(client_cli.requests)
app.command("reject")(client_cli.reject)


def main() -> None:
    """Console entry point: run the app, show project errors without a traceback."""
    try:
        app(standalone_mode=False)
    except FedUnlearnError as exc:
        # escape: messages name TOML tables like [federation], which rich would take for markup
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
