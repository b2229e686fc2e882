"""The ``fedunlearn`` command: one typer app composed of one module per command group.

    node {init,serve,forget,requests,reject}   client.cli
    edge {export,predict,latency}              simulations.edge_cli
    simulate, scale                            simulations.simulate_cli
    bench                                      simulations.bench_cli
    list                                       simulations.registry_cli

The group modules import torch, Flower and ONNX inside the commands that use
them, so help, filing and listing requests and edge prediction start at once.
Project errors are turned into a one-line message and exit code 2 here, and
nowhere else.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer
from rich.console import Console
from rich.markup import escape

from fedunlearn.client import cli as node_cli
from fedunlearn.common.errors import FedUnlearnError
from fedunlearn.simulations import bench_cli, edge_cli, registry_cli, simulate_cli
from fedunlearn.simulations.deprecation import add_old_spellings

__all__ = ["OLD_SPELLINGS", "app", "main"]

app = typer.Typer(
    name="fedunlearn",
    help="Federated and edge machine unlearning: ReMI, audited by membership inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(node_cli.node_app, name="node")
app.add_typer(edge_cli.edge_app, name="edge")
app.command("simulate")(simulate_cli.simulate_command)
app.command("scale")(simulate_cli.scale_command)
app.command("bench")(bench_cli.bench)
app.command("list")(registry_cli.list_registries)

# hidden for one release; each warns on stderr, then runs its new spelling
OLD_SPELLINGS: dict[str, tuple[str, Callable[..., None]]] = {
    "forget": ("node forget", node_cli.forget),
    "requests": ("node requests", node_cli.requests),
    "reject": ("node reject", node_cli.reject),
    "export": ("edge export", edge_cli.export_command),
    "predict": ("edge predict", edge_cli.predict_command),
    "bench-edge": ("edge latency", edge_cli.latency_command),
}
add_old_spellings(app, OLD_SPELLINGS)


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


if __name__ == "__main__":
    main()
