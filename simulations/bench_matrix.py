"""The paper's matrix: four architectures x digits and Fashion-MNIST x random 10% and one class.

Each cell is one ``fedunlearn bench`` run (``bench_pipeline``) with caps that fit a 2-core CPU,
written to ``OUT/<cell>/`` like the command would; a cell whose ``bench.json`` already holds the same
configuration is kept, so that a matrix of many hours can be finished over several sittings. The
summary (``matrix.json``, ``matrix.md``) is read back from the cells' files, one row per cell: ReMI's
and the best other inexact method's avg_gap and U-LiRA, the strongest per-example attack's TPR at 1%
FPR on ReMI, the original and retrain, and ReMI's time as a share of retrain's. Every method runs its
defaults here; the tuned comparison is the headline bench's (``bench --tuned``).

    python -m fedunlearn.simulations.bench_matrix --out docs/bench/matrix [--cells PATTERN]
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedunlearn.common.errors import ConfigError
from fedunlearn.simulations.markdown import table

if TYPE_CHECKING:  # the bench imports torch; this module loads it only when a cell runs
    from fedunlearn.simulations.bench import BenchConfig

__all__ = ["CELLS", "Cell", "main", "matrix_page", "matrix_summary", "matrix_table", "run_matrix"]

INEXACT_REFERENCE = "remi"
RANDOM = "random:0.1"


@dataclass(frozen=True)
class Cell:
    """One bench of the matrix and the caps that make it fit: training samples, recipe epochs, seeds,
    reference models and U-LiRA shadow splits (random forgetting only)."""

    dataset: str
    model: str
    forget: str
    train_size: int | None
    epochs: int
    seeds: int = 1
    reference_models: int = 2
    ulira_shadows: int = 0

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.model}-{self.forget.replace(':', '')}"

    def config(self, *, device: str, data_root: Path | None) -> BenchConfig:
        """The cell's bench configuration."""
        from fedunlearn.common.training import TrainConfig
        from fedunlearn.simulations.bench import BenchConfig

        return BenchConfig(dataset=self.dataset, model=self.model, forget=self.forget, seeds=self.seeds,
                           device=device, train_size=self.train_size, recipe=TrainConfig(epochs=self.epochs),
                           data_root=data_root, reference_models=self.reference_models,
                           ulira_shadows=self.ulira_shadows)

    def fits(self, bench: Mapping[str, Any]) -> bool:
        """Whether a bench.json was made with this cell's caps (where the data lay and which device ran it
        are not the cell's to say)."""
        config = bench.get("config", {})
        recipe = config.get("recipe", {})
        names = (bench.get("dataset"), bench.get("model"), bench.get("forget"))
        return (names == (self.dataset, self.model, self.forget)
                and config.get("train_size") == self.train_size and recipe.get("epochs") == self.epochs
                and config.get("seeds") == self.seeds and config.get("reference_models") == self.reference_models
                and config.get("ulira_shadows") == self.ulira_shadows and not config.get("method_params")
                and not config.get("variants"))


def _cells() -> tuple[Cell, ...]:
    """Small models see all of digits and 2,000 Fashion-MNIST images; ResNet-18 and MobileNetV3 half the
    epochs and 1,000 images. U-LiRA needs random forgetting and gets the minimum of 4 shadows."""
    caps = {("digits", "small"): (None, 40), ("digits", "large"): (None, 20),
            ("fashion-mnist", "small"): (2000, 20), ("fashion-mnist", "large"): (1000, 10)}
    forgets = {"digits": (RANDOM, "class:3"), "fashion-mnist": (RANDOM, "class:0")}
    cells = []
    for dataset in ("digits", "fashion-mnist"):
        for model in ("mlp", "cnn", "resnet18", "mobilenet_v3_small"):
            train_size, epochs = caps[dataset, "small" if model in ("mlp", "cnn") else "large"]
            cells += [Cell(dataset, model, forget, train_size, epochs, ulira_shadows=4 if forget == RANDOM else 0)
                      for forget in forgets[dataset]]
    return tuple(cells)


CELLS = _cells()


def _bench_of(cell: Cell, out: Path) -> dict[str, Any] | None:
    """The cell's bench.json under ``out`` if it was made with the cell's caps, else None."""
    path = out / cell.name / "bench.json"
    if not path.is_file():
        return None
    bench: dict[str, Any] = json.loads(path.read_text())
    return bench if cell.fits(bench) else None


def run_matrix(cells: Sequence[Cell], out: Path, *, device: str = "auto", data_root: Path | None = None,
               command: str | None = None, summarised: Sequence[Cell] | None = None) -> dict[str, Any]:
    """Run every cell not yet done, then write the summary of ``summarised`` (default: ``cells``) from the
    cells' files."""
    from fedunlearn.common.provenance import git_commit
    from fedunlearn.simulations import bench_pipeline

    for cell in cells:
        cell.config(device=device, data_root=data_root).validate()  # every cell, before hours of training
    for cell in cells:
        if _bench_of(cell, out) is not None:
            print(f"{cell.name}: kept (its bench.json was made with these caps)", file=sys.stderr)
            continue
        print(f"{cell.name}: running", file=sys.stderr)
        config = cell.config(device=device, data_root=data_root)
        bench_pipeline.run_and_report(config, out / cell.name, command=command, provenance=git_commit())
    return write_summary(cells if summarised is None else summarised, out, command)


def _best_other(methods: Mapping[str, Any], key: Callable[[Mapping[str, Any]], float]) -> dict[str, Any] | None:
    """The inexact method other than ReMI with the lowest figure ``key(entry)``: {method, value}."""
    scored: list[dict[str, Any]] = [{"method": name, "value": key(entry)} for name, entry in methods.items()
              if name not in ("original", "retrain", INEXACT_REFERENCE) and "variant_of" not in entry]
    return min(scored, key=lambda best: best["value"]) if scored else None


def _cell_summary(cell: Cell, bench: Mapping[str, Any]) -> dict[str, Any]:
    from fedunlearn.simulations.bench_report import strongest_reference_attack

    methods = bench["methods"]
    remi, retrain = methods[INEXACT_REFERENCE], methods["retrain"]
    attack = strongest_reference_attack(methods["original"])
    ulira = bench["ulira"] is not None
    return {
        "dataset": cell.dataset, "model": cell.model, "forget": cell.forget, "train_size": cell.train_size,
        "epochs": cell.epochs, "seeds": len(bench["seeds"]), "reference_models": cell.reference_models,
        "ulira_shadows": cell.ulira_shadows, "commit": bench["commit"],
        "floor_avg_gap": bench["floor"]["avg_gap"]["mean"],
        "remi_avg_gap": remi["avg_gap"], "best_other": _best_other(methods, lambda e: e["avg_gap"]),
        "remi_ulira": remi["ulira"]["accuracy"] if ulira else None,
        "best_other_ulira": _best_other(methods, lambda e: e["ulira"]["accuracy"]) if ulira else None,
        "attack": attack,
        "tpr_at_1pct_fpr": {name: methods[name]["attacks"][attack]["tpr_at_1pct_fpr"]
                            for name in ("original", "retrain", INEXACT_REFERENCE)},
        "remi_time_ratio": round(remi["seconds"] / retrain["seconds"], 4),
    }


def matrix_summary(cells: Sequence[Cell], out: Path) -> dict[str, Any]:
    """matrix.json's content, read from each cell's bench.json (a cell not yet run with its caps is missing)."""
    summary: dict[str, Any] = {"cells": {}, "missing": []}
    for cell in cells:
        bench = _bench_of(cell, out)
        if bench is None:
            summary["missing"].append(cell.name)
        else:
            summary["cells"][cell.name] = _cell_summary(cell, bench)
    return summary


def _best(best: Mapping[str, Any] | None, digits: int) -> str:
    return "-" if best is None else f"{best['value']:.{digits}f} ({best['method']})"


def matrix_table(summary: Mapping[str, Any], folder: str = "") -> list[str]:
    """One row per cell that ran, each linking its bench.md under ``folder`` (relative to the page); the
    cells not yet run in a line below."""
    rows = []
    for name, c in summary["cells"].items():
        tpr = c["tpr_at_1pct_fpr"]
        caps = f"{c['train_size'] or 'all'} / {c['epochs']} ep / {c['seeds']} seed"
        rows.append((f"[{name}]({folder}{name}/bench.md)", caps, f"{c['remi_avg_gap']:.2f}", _best(c["best_other"], 2),
                     f"{c['floor_avg_gap']:.2f}",
                     "-" if c["remi_ulira"] is None else f"{c['remi_ulira']:.3f}", _best(c["best_other_ulira"], 3),
                     f"{tpr['remi']:.1f} / {tpr['original']:.1f} / {tpr['retrain']:.1f} ({c['attack']})",
                     f"{c['remi_time_ratio']:.3f}", f"`{str(c['commit'])[:12]}`"))
    lines = table(("cell", "caps", "remi avg_gap", "best other", "floor", "remi U-LiRA", "best other U-LiRA",
                   "TPR@1% remi / original / retrain", "remi time / retrain", "commit"), rows)
    if summary["missing"]:
        lines += ["", "Not yet run: " + ", ".join(summary["missing"]) + "."]
    return lines


def matrix_page(summary: Mapping[str, Any]) -> str:
    """matrix.md, from matrix.json's summary alone."""
    return "\n".join(["# The matrix: architectures x datasets x forget requests", "",
                      "Generated by `python -m fedunlearn.simulations.bench_matrix` from each cell's bench.json. "
                      "Every method runs its defaults; caps (training images / recipe epochs / seeds) fit a 2-core "
                      "CPU. avg_gap: lower is better, floor = two retrains; U-LiRA: 0.5 = indistinguishable from "
                      "retraining (4 shadow splits, random forgetting only); TPR at 1% FPR in percent of the "
                      "strongest reference attack on the original.", "", *matrix_table(summary)]) + "\n"


def write_summary(cells: Sequence[Cell], out: Path, command: str | None) -> dict[str, Any]:
    """matrix.json and matrix.md; the JSON names the command that wrote it and each cell its bench's commit."""
    summary = {"command": command, **matrix_summary(cells, out)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "matrix.json").write_text(json.dumps(summary, indent=2))
    (out / "matrix.md").write_text(matrix_page(summary))
    return summary


def select_cells(patterns: Sequence[str]) -> list[Cell]:
    """The cells whose names match any of the shell patterns (all of them without any)."""
    chosen = [cell for cell in CELLS if not patterns or any(fnmatch.fnmatch(cell.name, p) for p in patterns)]
    if not chosen:
        raise ConfigError(f"no cell matches {', '.join(patterns)}; cells: {', '.join(c.name for c in CELLS)}")
    return chosen


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Run the bench over architectures, datasets and forget requests.")
    parser.add_argument("--out", type=Path, default=Path("runs/matrix"))
    parser.add_argument("--cells", nargs="*", default=[], help="shell patterns of cell names (default: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--summary-only", action="store_true", help="rewrite matrix.json/md from the cells' files")
    args = parser.parse_args(argv)
    cells = select_cells(args.cells)
    command = shlex.join(["python", "-m", "fedunlearn.simulations.bench_matrix",
                          *(sys.argv[1:] if argv is None else argv)])
    if args.summary_only:
        write_summary(CELLS, args.out, command)
        return
    run_matrix(cells, args.out, device=args.device, data_root=args.data_dir, command=command, summarised=CELLS)


if __name__ == "__main__":
    main()
