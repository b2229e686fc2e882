"""``fedunlearn bench``: the centralised benchmark with progress bars and a summary table.

The benchmark (torch, the audits, ONNX for ``--edge``) is imported when the command runs, not with the CLI.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedunlearn.common.errors import ConfigError

if TYPE_CHECKING:  # the bench imports torch; the CLI imports it only when a command runs
    from fedunlearn.simulations.bench import BenchConfig

__all__ = ["bench", "parse_method_params"]


def parse_method_params(items: list[str]) -> dict[str, dict[str, str]]:
    """``["remi.lambda_kl=2", ...]`` -> ``{"remi": {"lambda_kl": "2"}}``; typing happens later."""
    parsed: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not (sep and dot and method and name and value):
            raise ConfigError(f"--param takes METHOD.KEY=VALUE (e.g. remi.lambda_kl=2), got {item!r}")
        parsed.setdefault(method, {})[name] = value
    return parsed


def _summary_table(payload: dict) -> Table:
    table = Table(title=f"{payload['dataset']} / {payload['model']} / {payload['forget']}")
    columns = ("ua", "ra", "ta", "mia_efficacy", "mia_auc", "seconds", "avg_gap")
    table.add_column("method")
    for column in columns:
        table.add_column(column, justify="right")
    for method, entry in payload["methods"].items():
        table.add_row(method, *(f"{entry[c]:.3f}" if c == "mia_auc" else f"{entry[c]:.2f}" for c in columns))
    return table


def _per_example_table(payload: dict) -> Table:
    """TPR at 1% FPR of the reference-model attacks next to the loss attack's, and U-LiRA: what bench.md's
    second table shows, kept apart so that each table fits a terminal."""
    from fedunlearn.common.audit.calibrated import CALIBRATED_ATTACKS
    from fedunlearn.common.audit.report import PRIMARY_ATTACK

    table = Table(title="per-example attacks (TPR % at 1% FPR)" + (" and U-LiRA" if payload["ulira"] else ""))
    attacks = (*CALIBRATED_ATTACKS.names(), PRIMARY_ATTACK)
    table.add_column("method")
    for name in attacks:
        table.add_column(name, justify="right")
    if payload["ulira"] is not None:
        table.add_column("u-lira accuracy", justify="right")
    for method, entry in payload["methods"].items():
        cells = [f"{entry['attacks'][name]['tpr_at_1pct_fpr']:.2f}" for name in attacks]
        if payload["ulira"] is not None:
            cells.append(f"{entry['ulira']['accuracy']:.3f}")
        table.add_row(method, *cells)
    return table


@contextmanager
def _progress(steps: int) -> Iterator[Callable[[str], None]]:
    """A transient progress bar on stderr; yields the callback that names and counts each step. Where
    stderr is no terminal (logs, CI, a remote GPU job) a bar draws nothing, so each step is a line instead."""
    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=steps)

        def advance(description: str) -> None:
            progress.update(task, description=description)
            progress.advance(task)
            if not console.is_terminal:
                (state,) = progress.tasks  # the one task added above
                progress.console.print(f"[{state.elapsed or 0.0:7.1f} s] {state.completed}/{steps} {description}",
                                       markup=False, highlight=False)

        yield advance


def _tune(config: BenchConfig, out: Path, command: str, provenance: tuple[str, bool], select: str) -> None:
    """``bench --tune``: every method's grid on ``config.seeds`` validation seeds, with a progress bar."""
    from fedunlearn.simulations.bench_tuning import GRIDS, configurations, run_tuning, write_tuning

    total = config.seeds * (4 + sum(len(configurations(GRIDS[m])) for m in config.methods if m in GRIDS))
    with _progress(total) as advance:
        tuning = run_tuning(config, advance, validation_seeds=config.seeds, select=select)
    payload = write_tuning(tuning, out, command=command, provenance=provenance)
    for method, entry in payload["methods"].items():
        chosen = ", ".join(f"{k}={v}" for k, v in entry["chosen"].items())
        deep = f", deep_gap {entry['deep_gap']:.2f}" if "deep_gap" in entry else ""
        Console().print(f"{method}: {chosen} (avg_gap {entry['avg_gap']:.2f}{deep})")
    Console().print(f"wrote {out / 'tuning.json'}, tuning.md")


def bench(
    dataset: str = typer.Option("digits", help="Dataset name (see `fedunlearn list`)."),
    model: str = typer.Option("cnn", help="Model name."),
    forget: str = typer.Option("random:0.1", help="random:<fraction> | class:<k> | ids:<i,j,...>"),
    methods: str = typer.Option(
        "retrain,remi,finetune,neggrad_plus,random_label,fisher,salun",
        help="Comma-separated methods; retrain (the gold standard) is always run.",
    ),
    seeds: int = typer.Option(1, help="Number of seeds (0..n-1); metrics are means over seeds."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | mps"),
    out: Path = typer.Option(Path("runs/bench"), help="Output directory."),
    train_size: int | None = typer.Option(None, help="Cap on training samples (default: all)."),
    holdout_size: int | None = typer.Option(None, help="Non-member hold-out samples (default: derived)."),
    epochs: int = typer.Option(40, help="Epochs of the original/retrain recipe (train to convergence)."),
    batch_size: int = typer.Option(128, help="Batch size of the recipe."),
    lr: float = typer.Option(1e-3, help="Learning rate of the recipe."),
    optimizer: str = typer.Option("adam", help="adam | sgd"),
    param: list[str] = typer.Option(
        [], "--param", help="Method hyper-parameter METHOD.KEY=VALUE, repeatable. For random/ids forgetting "
                            "every method's task carries the reference models' expectation of each sample (the "
                            "mean over those that never trained on it); remi.calibrated=false makes ReMI ignore it "
                            "(the ablation). bench.json records it under references.expected_confidence."
    ),
    data_dir: Path | None = typer.Option(None, help="Directory holding the dataset files."),
    download: bool = typer.Option(False, help="Allow torchvision to download missing datasets."),
    edge: bool = typer.Option(False, help="Also export this bench's original/retrain/remi to ONNX fp32 + int8, "
                                           "audit each precision with the bench's attack and time it as `fedunlearn "
                                           "edge latency` does (OUT/edge/, edge.json, edge.md, a section in "
                                           "bench.md)."),
    edge_int8: str = typer.Option("static", help="int8 quantisation of --edge: static | dynamic"),
    edge_repeats: int = typer.Option(30, help="Timed calls per engine and batch size in the --edge latencies."),
    reference_models: int = typer.Option(8, help="Reference models per seed for the LiRA and RMIA audits (>= 2), "
                                                  "each trained with the recipe on a random half of the retain set."),
    ulira_shadows: int = typer.Option(0, help="U-LiRA shadow splits per seed (0 = off; 16 or more recommended, "
                                               "each retrains an original, every method and a retrain; needs "
                                               "--forget random:<fraction>)."),
    variant: list[str] = typer.Option(
        [], "--variant", help="Ablation NAME=METHOD:KEY=VALUE,KEY=VALUE, repeatable: METHOD run again as NAME on the "
                              "same seeds with those hyper-parameters fixed over its --param ones, e.g. "
                              "remi-no-mi=remi:lambda_mia=0. It gets a row in every table, its paired difference "
                              "to remi and methods.NAME.variant_of in bench.json."
    ),
    white_box: bool = typer.Option(True, "--white-box/--no-white-box",
                                   help="Also probe every model's features and gradients, and for class forgetting "
                                        "count the epochs it takes to relearn the class (bench.md's white-box "
                                        "section)."),
    tune: bool = typer.Option(False, "--tune", help="Instead of the bench: run every method's grid of at most 12 "
                                                    "configurations on --seeds validation seeds no bench reports "
                                                    "(10000 up), choose each on its mean avg_gap to their retrains, "
                                                    "write OUT/tuning.json and tuning.md."),
    tune_select: str = typer.Option("avg_gap", "--tune-select", help="What --tune chooses on: avg_gap, or deep_gap "
                                                                     "(avg_gap with the white-box AUCs' distance to "
                                                                     "retrain's: forgetting inside the model too)."),
    tuned: Path | None = typer.Option(None, "--tuned", help="Run every inexact method with the configuration "
                                                            "that --tune chose for this same setup (tuning.json)."),
    resume: bool = typer.Option(False, "--resume", help="Take back the seeds an earlier run of this same "
                                                        "configuration finished (OUT/seeds/, pickles: only your "
                                                        "own) and run the rest."),
    as_json: bool = typer.Option(False, "--json", help="Print bench.json instead of a table."),
) -> None:
    """Train once per seed, run every unlearning method from it, audit all against retrain."""
    from fedunlearn.common.provenance import git_commit
    from fedunlearn.common.training import TrainConfig
    from fedunlearn.simulations.bench import BenchConfig, Variant
    from fedunlearn.simulations.bench_pipeline import bench_steps, run_and_report
    from fedunlearn.simulations.bench_tuning import tuned_params

    config = BenchConfig(
        dataset=dataset, model=model, forget=forget,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        seeds=seeds, device=device, train_size=train_size, holdout_size=holdout_size,
        recipe=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer),  # type: ignore[arg-type]
        method_params=parse_method_params(param), data_root=data_dir, download=download,
        edge=edge, edge_int8=edge_int8, edge_repeats=edge_repeats,  # type: ignore[arg-type]
        reference_models=reference_models, ulira_shadows=ulira_shadows,
        variants=tuple(Variant.parse(item) for item in variant), white_box=white_box,
    )
    provenance = git_commit()  # the code that runs, not whatever HEAD is when a long run finishes
    command = shlex.join(["fedunlearn", *sys.argv[1:]])  # also when started as python -c "...main()"
    if tune:
        if tuned or ulira_shadows or edge or variant:
            raise ConfigError("--tune runs the methods alone on validation seeds: drop --tuned, --ulira-shadows, "
                              "--edge and --variant")
        _tune(config, out, command, provenance, tune_select)
        return
    if tune_select != "avg_gap":
        raise ConfigError("--tune-select chooses what --tune selects on; without --tune there is nothing to choose")
    if tuned is not None:
        config = replace(config, method_params=tuned_params(tuned, config), tuned=tuned)
    with _progress(bench_steps(config)) as advance:
        payload = run_and_report(config, out, command=command, provenance=provenance, progress=advance,
                                 resume=resume)
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
    else:
        Console().print(_summary_table(payload))
        Console().print(_per_example_table(payload))
        extra = ", edge.json, edge.md, edge/" if edge else ""
        Console().print(f"wrote {out / 'bench.json'}, bench.md, roc.png, metrics.png{extra}")
