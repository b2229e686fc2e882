"""Draw the pages and plots of every result folder under ``docs/`` again from its JSON.

``results_docs`` runs it, so one command brings every table and plot in line with the JSON the runs
wrote: a bench folder's bench.md, metrics.png and roc.png (from bench.json, with edge.json's section
where the bench exported models), a tuning's tuning.md and the matrix's matrix.md. A bench.json written
before benches recorded their commit lacks what today's page shows; it is left as its run wrote it, and
named (``legacy_benches``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedunlearn.simulations.bench_edge import edge_markdown
from fedunlearn.simulations.bench_matrix import matrix_page
from fedunlearn.simulations.bench_report import bench_page, draw_plots
from fedunlearn.simulations.bench_tuning import tuning_page
from fedunlearn.simulations.results_summary import load_json

__all__ = ["draw_bench_plots", "legacy_benches", "result_pages"]


def _benches(root: Path) -> list[tuple[Path, Mapping[str, Any]]]:
    """Every bench folder under ``root`` whose bench.json today's pages can be drawn from."""
    found = ((path.parent, load_json(path)) for path in sorted(root.rglob("bench.json")))
    return [(folder, payload) for folder, payload in found if "commit" in payload]


def legacy_benches(root: Path) -> list[Path]:
    """bench.json files under ``root`` written before benches recorded their commit."""
    return [path for path in sorted(root.rglob("bench.json")) if "commit" not in load_json(path)]


def _sections(folder: Path) -> list[str]:
    edge = folder / "edge.json"
    return [edge_markdown(load_json(edge))] if edge.exists() else []


def result_pages(root: Path) -> dict[Path, str]:
    """Each result page under ``root`` -> the text its JSON gives."""
    pages = {folder / "bench.md": bench_page(payload, _sections(folder)) for folder, payload in _benches(root)}
    pages |= {path.with_name("tuning.md"): tuning_page(load_json(path)) for path in sorted(root.rglob("tuning.json"))}
    pages |= {path.with_name("matrix.md"): matrix_page(load_json(path)) for path in sorted(root.rglob("matrix.json"))}
    return pages


def draw_bench_plots(root: Path) -> int:
    """Draw every bench folder's plots again from its bench.json; returns how many folders."""
    benches = _benches(root)
    for folder, payload in benches:
        draw_plots(payload, folder)
    return len(benches)
