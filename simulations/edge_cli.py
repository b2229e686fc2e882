"""``fedunlearn predict`` and ``fedunlearn bench-edge``: thin shells over common.edge."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from common.edge.bench import EdgeBench, run_edge_bench, write_edge_bench
from common.edge.runtime import EdgeError, EdgeInputError, EdgeModel, format_predictions
from common.errors import ConfigError, DataError, FedUnlearnError, ModelError

__all__ = ["as_project_error", "bench_edge_command", "predict_command"]


def as_project_error(err: EdgeError) -> FedUnlearnError:
    """The runtime's own error (it imports nothing from the project) as the CLI's error family, same text."""
    return DataError(str(err)) if isinstance(err, EdgeInputError) else ModelError(str(err))


def predict_command(
    model: Path = typer.Argument(..., help="model.onnx or model.int8.onnx, with manifest.json beside it."),
    inputs: list[Path] = typer.Argument(..., help=".npy arrays in raw loader units, or 8-bit images."),
    top: int = typer.Option(3, help="How many classes to list per input."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of one line per input."),
) -> None:
    """Classify inputs with a verified ONNX export (the same code as the on-device runtime.py)."""
    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    try:
        predictions = EdgeModel.open(model).predict_files(inputs, top=top)
    except EdgeError as err:
        raise as_project_error(err) from err
    typer.echo(format_predictions(predictions, as_json=json_out))


def _table(result: EdgeBench) -> Table:
    table = Table(title=f"{Path(result.model).name}: one thread, median (p90) ms over {result.repeats} runs")
    for column in ("engine", "batch 1", "batch 32", "samples/s @32", "size", "max |Δlogit|", "top-1 agree"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for name, entry in result.engines.items():
        if entry is None:
            table.add_row(name, *["—"] * 6)
            continue
        size = f"{entry.bytes / 1024:.0f} KiB" if entry.bytes is not None else "—"
        table.add_row(name, f"{entry.b1.median_ms:.3f} ({entry.b1.p90_ms:.3f})",
                      f"{entry.b32.median_ms:.3f} ({entry.b32.p90_ms:.3f})", f"{entry.throughput_b32:,.0f}", size,
                      f"{entry.max_abs_diff:.2e}", f"{entry.top1_agreement:.3f}")
    return table


def bench_edge_command(
    model: Path = typer.Argument(..., help="The fp32 model.onnx of an export folder."),
    out: Path | None = typer.Option(None, help="Where to write the JSON (default: bench-edge.json beside MODEL)."),
    repeats: int = typer.Option(50, help="Timed calls per engine and batch size, after warm-up."),
    torch_model: Path | None = typer.Option(
        None, help="Torch checkpoint to compare (default: the manifest's source_checkpoint, if it lies "
                   "inside the export folder; a run's export names ../model.pt, so pass that here)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON instead of a table."),
) -> None:
    """Latency of torch eager, ONNX Runtime fp32 and int8 on the same inputs, one thread each."""
    try:
        result = run_edge_bench(model, repeats=repeats, torch_model=torch_model)
    except EdgeError as err:
        raise as_project_error(err) from err
    path = write_edge_bench(result, out if out is not None else Path(model).parent / "bench-edge.json")
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
        return
    console = Console()
    console.print(_table(result))
    ratios = ", ".join(f"{k} = {v:.2f}" for k, v in result.ratios.items() if v is not None)
    console.print(f"batch-1 latency ratios (< 1: faster): {ratios or 'none'}")
    console.print(f"wrote {path}")
