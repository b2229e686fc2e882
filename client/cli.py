"""``fedunlearn node``: make a node directory, file, list and reject forget requests, serve the gRPC door.

Thin typer shells over ``common.nodes`` and ``client.request_service``; errors
are project errors, shown once by ``simulations.cli.main``. Ledger text (reasons,
rejections) comes from whoever filed a request, so it is shown as plain text with
its control characters escaped, never as rich markup or raw terminal bytes.

torch comes in with the node's samples (``common.nodes.directory``), so it is
imported inside the commands that read them (init, serve). Filing reads the
node's records and sample index (``common.nodes.records``), listing and
rejecting only the ledger: they start at once.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fedunlearn.common.errors import ConfigError, DataError, RequestError
from fedunlearn.common.nodes.ledger import Ledger
from fedunlearn.common.nodes.text import clip, printable

__all__ = ["forget", "init", "node_app", "reject", "requests", "serve"]

node_app = typer.Typer(help="A client's node directory: create it, file and list forget requests, serve them.",
                       no_args_is_help=True)


def _console() -> Console:
    """A console made when a command prints, so it sizes itself to the terminal (``COLUMNS``) of that moment;
    paths and ledger text are data, never markup."""
    return Console(markup=False, highlight=False)


COLUMNS = ("request_id", "kind", "num_samples", "status", "reason", "deferral", "updated_at")


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
    data_dir: Path | None = typer.Option(None, help="Directory holding the dataset files."),
    download: bool = typer.Option(False, help="Download the dataset if it is missing."),
) -> None:
    """Materialise one client's world: train part, local hold-out, sample ids, ledger.sqlite."""
    from fedunlearn.common.data.datasets import load_dataset
    from fedunlearn.common.nodes.directory import NodeLayout, materialise_node

    index, total = _parse_partition(partition)
    layout = NodeLayout(dataset=dataset, partition=index, num_partitions=total, partitioner=partitioner,
                        seed=seed, holdout_fraction=holdout_fraction, train_size=train_size)
    bundle = load_dataset(dataset, root=data_dir, download=download, seed=seed)
    node = materialise_node(node_dir, bundle, layout)
    _console().print(f"node {index}/{total} of {dataset}: {len(node.train())} training and "
                  f"{len(node.holdout())} hold-out samples in {node_dir}")


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(token) for token in text.split(",") if token.strip()]
    except ValueError:
        raise RequestError(f"--ids takes comma-separated integers (e.g. 3,17,99), got {clip(text)}") from None


def _ledger(node_dir: Path) -> Ledger:
    """The node's ledger alone: listing and rejecting read no samples, so they need neither torch nor the
    repairs ``NodeDirectory.open`` makes before samples are read (the next open makes them)."""
    if not (node_dir / "node.json").is_file():
        raise DataError(f"{node_dir} is not a node directory (no node.json); create one with `fedunlearn node init`")
    return Ledger(node_dir / "ledger.sqlite")


@node_app.command("forget")
def forget(
    node_dir: Path = typer.Option(..., help="The node directory."),
    ids: str | None = typer.Option(None, help="Sample ids to forget, e.g. 3,17,99."),
    class_id: int | None = typer.Option(None, "--class", help="Forget every sample of this class."),
    everything: bool = typer.Option(False, "--all", help="Forget all of this node's data (it leaves)."),
    reason: str = typer.Option(..., help="Why (kept in the ledger and the receipt)."),
) -> None:
    """File a forget request; prints its id once it is durable."""
    from fedunlearn.common.nodes.records import NodeRecords  # the request is checked against the node's sample index

    node = NodeRecords.open(node_dir)
    request = node.submit(ids=_parse_ids(ids) if ids is not None else None, target_class=class_id,
                          everything=everything, reason=reason)
    typer.echo(request.request_id)


@node_app.command("requests")
def requests(
    node_dir: Path = typer.Option(..., help="The node directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List this node's forget requests with status and receipt."""
    rows = [{**r.summary(), "receipt": dict(r.receipt) if r.receipt else None} for r in _ledger(node_dir).list()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=Text(f"forget requests of {printable(str(node_dir))}"))
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(printable("" if row[c] is None else str(row[c]))) for c in COLUMNS))
    _console().print(table)


@node_app.command("reject")
def reject(
    node_dir: Path = typer.Option(..., help="The node directory."),
    request_id: str = typer.Option(..., help="The pending request to reject."),
    reason: str = typer.Option(..., help="Why (e.g. a legal hold); kept in the ledger."),
) -> None:
    """Reject a pending request: its samples return to training and nothing is purged."""
    _ledger(node_dir).reject(request_id, reason)
    typer.echo(f"{request_id} rejected")


@contextmanager
def _logged_to_stderr(*names: str) -> Iterator[None]:
    """INFO records of ``names`` on stderr while serving: the record of who called, and every warning."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


@node_app.command("serve")
def serve(
    node_dir: Path = typer.Option(..., help="The node directory."),
    port: int = typer.Option(50151, help="Port of the ForgetRequests gRPC service."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 (or ::) to accept other machines."),
    token: str | None = typer.Option(None, envvar="FEDUNLEARN_REQUEST_TOKEN",
                                     help="Bearer token callers must send (or $FEDUNLEARN_REQUEST_TOKEN)."),
    tls_cert: Path | None = typer.Option(None, help="Server certificate (PEM)."),
    tls_key: Path | None = typer.Option(None, help="Server private key (PEM)."),
    insecure: bool = typer.Option(False, help="Serve without TLS (local testing only)."),
    allow_unauthenticated: bool = typer.Option(
        False, help="Accept calls without a bearer token: anyone who reaches the port can file requests."),
) -> None:
    """Serve Submit / Status / List for this node until interrupted; each call is logged to stderr."""
    from fedunlearn.client.request_service import start_request_server

    with _logged_to_stderr("fedunlearn.client.request_service", "fedunlearn.common.nodes"):
        server, bound = start_request_server(node_dir, port=port, host=host, token=token, tls_cert=tls_cert,
                                             tls_key=tls_key, insecure=insecure,
                                             allow_unauthenticated=allow_unauthenticated)
        _console().print(f"serving forget requests for {node_dir} on {host}:{bound} (pid {os.getpid()})",
                      soft_wrap=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        server.stop(grace=2).wait()
