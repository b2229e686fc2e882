"""``fedunlearn simulate`` and ``fedunlearn scale``: a scenario on Flower's Simulation Runtime, with progress and
a summary; its cost at several client counts.

Flower, torch and the scenario's registries are imported when a command runs, not with the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fedunlearn.common.errors import ConfigError

if TYPE_CHECKING:
    from fedunlearn.server.run import Event

__all__ = ["scale_command", "simulate_command"]


def simulate_command(
    scenario_path: Path = typer.Argument(..., metavar="SCENARIO", help="Scenario TOML (see simulations/)."),
    out: Path | None = typer.Option(None, help="Run directory (default runs/<scenario>-<time>)."),
    clients: int | None = typer.Option(None, help="Override [federation].clients."),
    rounds: int | None = typer.Option(None, help="Override [federation].rounds."),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | mps (overrides the scenario)."),
    gpu_fraction: float = typer.Option(0.25, help="GPU share per virtual client when the device is CUDA."),
    seed: int | None = typer.Option(None, help="Override [scenario].seed (data cut, partitions, training)."),
) -> None:
    """Run SCENARIO end to end and write report.json, report.md, plots, node directories and model.pt."""
    from fedunlearn.common.scenario import load_scenario
    from fedunlearn.simulations.simulate import default_run_dir, simulate

    scenario = load_scenario(scenario_path).with_overrides(clients=clients, rounds=rounds, device=device, seed=seed)
    run_dir = out or default_run_dir(scenario)
    console = Console()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"{scenario.name}: training", total=scenario.federation.rounds)

        def on_event(event: Event) -> None:
            if event.kind == "round":
                progress.update(task, completed=event.round, description=f"{scenario.name}: {event.detail}")
                if not console.is_terminal:  # logs and CI: one line per round instead of a live bar
                    progress.console.print(f"round {event.round}: {event.detail}")
            else:
                progress.console.print(f"round {event.round}: {event.detail}")

        simulate(scenario, run_dir, gpu_fraction=gpu_fraction, on_event=on_event)
    console.print((run_dir / "report.md").read_text(), markup=False)
    console.print(f"run directory: {run_dir}")


def scale_command(
    scenario_path: Path = typer.Argument(..., metavar="SCENARIO", help="Scenario TOML to scale."),
    clients: str = typer.Option("10,50,100", help="Comma-separated client counts."),
    rounds: int = typer.Option(3, help="Rounds per run (the scenario's requests must fall before the last)."),
    out: Path = typer.Option(Path("runs/scaling"), help="Where runs, logs and scaling.json/md go."),
) -> None:
    """Wall time and peak memory (whole process tree) of SCENARIO at several client counts."""
    from fedunlearn.common.scenario import load_scenario
    from fedunlearn.simulations.scaling import measure_scaling

    try:
        counts = [int(c) for c in clients.split(",") if c.strip()]
    except ValueError:
        raise ConfigError(f"--clients takes comma-separated integers, got {clients!r}") from None
    load_scenario(scenario_path).with_overrides(clients=max(counts), rounds=rounds)  # fail fast on bad input
    measure_scaling(scenario_path, counts, rounds=rounds, out=out)
    Console().print((out / "scaling.md").read_text(), markup=False)
