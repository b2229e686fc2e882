"""Client-side commands: make a node directory, file and list forget requests, serve the gRPC door.

Thin typer shells over ``common.nodes`` and ``client.request_service``; errors
are project errors, shown once by ``simulations.cli.main``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from common.data.datasets import load_dataset
from common.errors import ConfigError, RequestError
from common.nodes import NodeDirectory, NodeLayout, materialise_node

__all__ = ["forget", "node_app", "reject", "requests"]

node_app = typer.Typer(help="Create and serve node directories (one per client).", no_args_is_help=True)
console = Console()


def _parse_partition(text: str) -> tuple[int, int]:
    index, sep, total = text.partition("/")
    try:
        if not sep:
            raise ValueError
        return int(index), int(total)
    except ValueError:
        raise ConfigError(f"--partition takes I/N (e.g. 0/5), got {text!r}") from None


@node_app.command("init")
def init(
    dataset: str = typer.Option(..., help="Dataset name (see `fedunlearn list`)."),
    partition: str = typer.Option(..., help="This node's partition as I/N, e.g. 0/5."),
    node_dir: Path = typer.Option(..., help="Directory to create (must not hold a node yet)."),
    partitioner: str = typer.Option("dirichlet:0.5", help="iid | dirichlet:<alpha> | class"),
    seed: int = typer.Option(0, help="Seed shared by every node of the federation."),
    holdout_fraction: float = typer.Option(0.2, help="Share of the partition kept as local non-members."),
    train_size: int | None = typer.Option(None, help="Use a seeded subset of the train split (all nodes alike)."),
    data_dir: Path | None = typer.Option(None, help="Where the dataset files are."),
    download: bool = typer.Option(False, help="Download the dataset if it is missing."),
) -> None:
    """Materialise one client's world: train part, local hold-out, sample ids, ledger.sqlite."""
    index, total = _parse_partition(partition)
    layout = NodeLayout(dataset=dataset, partition=index, num_partitions=total, partitioner=partitioner,
                        seed=seed, holdout_fraction=holdout_fraction, train_size=train_size)
    bundle = load_dataset(dataset, root=data_dir, download=download, seed=seed)
    node = materialise_node(node_dir, bundle, layout)
    console.print(f"node {index}/{total} of {dataset}: {len(node.train())} training and "
                  f"{len(node.holdout())} hold-out samples in {node_dir}")


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(token) for token in text.split(",") if token.strip()]
    except ValueError:
        raise RequestError(f"--ids takes comma-separated integers (e.g. 3,17,99), got {text!r}") from None


def forget(
    node_dir: Path = typer.Option(..., help="The node directory."),
    ids: str | None = typer.Option(None, help="Sample ids to forget, e.g. 3,17,99."),
    class_id: int | None = typer.Option(None, "--class", help="Forget every sample of this class."),
    everything: bool = typer.Option(False, "--all", help="Forget all of this node's data (it leaves)."),
    reason: str = typer.Option(..., help="Why (kept in the ledger and the receipt)."),
) -> None:
    """File a forget request; prints its id once it is durable."""
    node = NodeDirectory.open(node_dir)
    request = node.submit(ids=_parse_ids(ids) if ids is not None else None, target_class=class_id,
                          everything=everything, reason=reason)
    typer.echo(request.request_id)


def requests(
    node_dir: Path = typer.Option(..., help="The node directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List this node's forget requests with status and receipt."""
    node = NodeDirectory.open(node_dir)
    rows = [{**r.summary(), "receipt": dict(r.receipt) if r.receipt else None} for r in node.ledger.list()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"forget requests of {node_dir}")
    for column in ("request_id", "kind", "num_samples", "status", "reason", "updated_at"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("request_id", "kind", "num_samples", "status", "reason",
                                             "updated_at")))
    console.print(table)


def reject(
    node_dir: Path = typer.Option(..., help="The node directory."),
    request_id: str = typer.Option(..., help="The pending request to reject."),
    reason: str = typer.Option(..., help="Why (e.g. a legal hold); kept in the ledger."),
) -> None:
    """Reject a pending request: its samples return to training and nothing is purged."""
    node = NodeDirectory.open(node_dir)
    if not reason.strip():
        raise RequestError("a rejection needs a reason")
    node.ledger.reject(request_id, reason.strip())
    typer.echo(f"{request_id} rejected")


@node_app.command("serve")
def serve(
    node_dir: Path = typer.Option(..., help="The node directory."),
    port: int = typer.Option(50151, help="Port of the ForgetRequests gRPC service."),
    host: str = typer.Option("0.0.0.0", help="Interface to bind."),
    token: str | None = typer.Option(None, envvar="FEDUNLEARN_REQUEST_TOKEN",
                                     help="Bearer token callers must send (or $FEDUNLEARN_REQUEST_TOKEN)."),
    tls_cert: Path | None = typer.Option(None, help="Server certificate (PEM)."),
    tls_key: Path | None = typer.Option(None, help="Server private key (PEM)."),
    insecure: bool = typer.Option(False, help="Serve without TLS (local testing only)."),
) -> None:
    """Serve Submit / Status / List for this node until interrupted."""
    from client.request_service import start_request_server

    server, bound = start_request_server(node_dir, port=port, host=host, token=token, tls_cert=tls_cert,
                                         tls_key=tls_key, insecure=insecure)
    console.print(f"serving forget requests for {node_dir} on {host}:{bound} (pid {os.getpid()})")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2).wait()
