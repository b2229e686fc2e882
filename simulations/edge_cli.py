"""``fedunlearn edge``: export a model to ONNX, classify with an export, time the engines.

Thin shells over ``common.edge``: options in, tables out. Each command imports
its engine when it runs: ``predict`` pays for numpy and ONNX Runtime only (the
torch-free ``common.edge.runtime``, the code a device runs), and help for nothing.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedunlearn.common.errors import ConfigError, DataError, FedUnlearnError, ModelError
from fedunlearn.simulations.deprecation import renamed_option

if TYPE_CHECKING:
    from fedunlearn.common.edge.bench import EdgeBench
    from fedunlearn.common.edge.runtime import EdgeError, Manifest

__all__ = ["as_project_error", "edge_app", "export_command", "latency_command", "predict_command"]

edge_app = typer.Typer(help="ONNX models for edge devices: export, predict, latency.", no_args_is_help=True)


def as_project_error(err: EdgeError) -> FedUnlearnError:
    """The runtime's own error (it imports nothing from the project) as the CLI's error family, same text."""
    from fedunlearn.common.edge.runtime import EdgeInputError

    return DataError(str(err)) if isinstance(err, EdgeInputError) else ModelError(str(err))


def _export_table(manifest: Manifest, out: Path) -> Table:
    table = Table(title=f"{manifest.architecture} -> {out}")
    for column in ("artifact", "precision", "KiB", "sha256", "parity"):
        table.add_column(column, justify="right" if column == "KiB" else "left")
    for name, entry in manifest.artifacts.items():
        parity = entry["parity"]
        text = f"max|diff| {parity['max_abs_diff']:.2g}"
        if "top1_agreement" in parity:
            text = f"top-1 agree {100 * parity['top1_agreement']:.1f}%, {text}"
            if parity.get("int8_accuracy") is not None:
                text += f", acc {parity['fp32_accuracy']:.2f} -> {parity['int8_accuracy']:.2f}"
        text += f" ({parity['samples']} {parity['inputs']})"
        table.add_row(name, entry["precision"], f"{entry['bytes'] / 1024:.0f}", entry["sha256"][:12], text)
    return table


@edge_app.command("export")
def export_command(
    source: Path = typer.Argument(..., help="RUN_DIR (holding model.pt and scenario.json) or a MODEL.pt file."),
    int8: str = typer.Option("static", help="static (calibrated on training images) | dynamic | none"),
    calibration: int = typer.Option(512, help="How many training images calibrate static int8."),
    out: Path | None = typer.Option(None, help="Output folder (default: RUN_DIR/export, or export/ beside the .pt)."),
    dataset: str | None = typer.Option(None, help="Dataset the model was trained on (default: checkpoint/scenario)."),
    data_dir: Path | None = typer.Option(None, help="Directory holding the dataset files."),
    data_root: Path | None = typer.Option(None, hidden=True, help="Deprecated spelling of --data-dir."),
    as_json: bool = typer.Option(False, "--json", help="Print manifest.json instead of a table."),
) -> None:
    """Export a model to ONNX (fp32 + int8) for edge devices, with a hash-checked manifest."""
    from fedunlearn.common.edge.manifest import MANIFEST_NAME
    from fedunlearn.common.edge.package import FP32_NAME, INT8_NAME
    from fedunlearn.common.edge.plan import ExportPlan, Int8Mode
    from fedunlearn.common.edge.source import export_checkpoint

    console = Console(stderr=True)
    data_dir = renamed_option(data_dir, data_root, old="--data-root", new="--data-dir")
    plan = ExportPlan(int8=Int8Mode.parse(int8, "--int8"), calibration=calibration)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # printed once below
        result = export_checkpoint(source, plan=plan, out=out, dataset=dataset, data_dir=data_dir)
    for message in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if as_json:
        typer.echo(json.dumps(result.manifest.raw, indent=2, sort_keys=True))
    else:
        Console().print(_export_table(result.manifest, result.folder))
        written = [name for name in (FP32_NAME, INT8_NAME) if name in result.manifest.artifacts]
        Console().print(f"wrote {', '.join(written)} and {MANIFEST_NAME} in {result.folder}")


@edge_app.command("predict")
def predict_command(
    model: Path = typer.Argument(..., help="model.onnx or model.int8.onnx, with manifest.json beside it."),
    inputs: list[Path] = typer.Argument(..., help=".npy arrays in raw loader units, or 8-bit images."),
    top: int = typer.Option(3, help="How many classes to list per input."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of one line per input."),
) -> None:
    """Classify inputs with a verified ONNX export (the same code as the on-device runtime.py)."""
    from fedunlearn.common.edge.runtime import EdgeError, EdgeModel, format_predictions

    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    try:
        predictions = EdgeModel.open(model).predict_files(inputs, top=top)
    except EdgeError as err:
        raise as_project_error(err) from err
    typer.echo(format_predictions(predictions, as_json=json_out))


def _latency_table(result: EdgeBench) -> Table:
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


@edge_app.command("latency")
def latency_command(
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
    from fedunlearn.common.edge.bench import run_edge_bench, write_edge_bench
    from fedunlearn.common.edge.runtime import EdgeError

    try:
        result = run_edge_bench(model, repeats=repeats, torch_model=torch_model)
    except EdgeError as err:
        raise as_project_error(err) from err
    path = write_edge_bench(result, out if out is not None else Path(model).parent / "bench-edge.json")
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
        return
    console = Console()
    console.print(_latency_table(result))
    ratios = ", ".join(f"{k} = {v:.2f}" for k, v in result.ratios.items() if v is not None)
    console.print(f"batch-1 latency ratios (< 1: faster): {ratios or 'none'}")
    console.print(f"wrote {path}")
