"""The bench end to end: every seed, U-LiRA, the edge exports, the report files.

``fedunlearn bench`` and the matrix (``bench_matrix``) both run it, so that a cell of the matrix is
exactly what the command would have written for the same options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedunlearn.common.device import resolve_device
from fedunlearn.simulations.bench import BenchConfig, Progress, run_bench
from fedunlearn.simulations.bench_checkpoint import SeedCheckpoints
from fedunlearn.simulations.bench_edge import edge_markdown, edge_models, run_edge, write_edge_report
from fedunlearn.simulations.bench_report import write_report
from fedunlearn.simulations.bench_ulira import run_ulira

__all__ = ["bench_steps", "run_and_report"]


def bench_steps(config: BenchConfig) -> int:
    """Progress steps per run: per seed the original, the references, every method and variant, the floor,
    every U-LiRA shadow and every edge model."""
    edge = len(edge_models(config)) if config.edge else 0
    return config.seeds * (len(config.lineup) + 3 + config.ulira_shadows + edge)


def run_and_report(config: BenchConfig, out: Path, *, command: str | None, provenance: tuple[str, bool],
                   progress: Progress = lambda _: None, resume: bool = False) -> dict[str, Any]:
    """Run the bench ``config`` describes and write its files to ``out``; returns bench.json's payload.
    Each finished seed is kept in ``out/seeds/``; ``resume`` takes back those made with this configuration."""
    _, params = config.validate()
    checkpoints = SeedCheckpoints(out / "seeds", config, resume=resume, provenance=provenance)
    runs = run_bench(config, progress, restore=checkpoints.restore, keep=checkpoints.keep)
    ulira = [run_ulira(config, run, params, progress) for run in runs] if config.ulira_shadows else []
    sections = []
    if config.edge:
        edge_payload = write_edge_report(config, run_edge(config, runs, out, progress), out)
        sections.append(edge_markdown(edge_payload))
    return write_report(config, str(resolve_device(config.device)), runs, out, ulira=ulira, command=command,
                        sections=sections, provenance=provenance, restored=checkpoints.restored)
