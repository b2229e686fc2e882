"""A bench stopped part way resumes: finished seeds are kept and, with --resume, taken back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedunlearn.common.training import TrainConfig
from fedunlearn.simulations import bench
from fedunlearn.simulations.bench import BenchConfig
from fedunlearn.simulations.bench_pipeline import run_and_report

CONFIG = BenchConfig(dataset="digits", model="mlp", forget="random:0.1", methods=("retrain", "finetune"), seeds=2,
                     train_size=200, recipe=TrainConfig(epochs=1), device="cpu", reference_models=2, white_box=False)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The seeds ``run_seed`` runs from here on."""
    seeds: list[int] = []
    real = bench.run_seed

    def counted(*args: Any) -> bench.SeedRun:
        seeds.append(args[4])
        return real(*args)

    monkeypatch.setattr(bench, "run_seed", counted)
    return seeds


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    return out, run_and_report(CONFIG, out, command=None, provenance=("a" * 40, False))


@pytest.mark.slow  # benches end to end
def test_every_finished_seed_is_kept(first: tuple[Path, dict[str, Any]]) -> None:
    out, payload = first
    assert sorted(p.name for p in (out / "seeds").iterdir()) == ["seed-0.pt", "seed-1.pt"]
    assert payload["restored_seeds"] == {}


@pytest.mark.slow  # benches end to end
def test_resume_takes_back_the_kept_seeds_and_runs_the_rest(first: tuple[Path, dict[str, Any]],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out, payload = first
    ran = _counting(monkeypatch)
    more = run_and_report(replace(CONFIG, seeds=3), out, command=None, provenance=("b" * 40, True), resume=True)
    assert ran == [2]
    assert more["restored_seeds"] == {"0": {"commit": "a" * 40, "dirty": False},
                                      "1": {"commit": "a" * 40, "dirty": False}}
    assert more["methods"]["finetune"]["per_seed"][:2] == payload["methods"]["finetune"]["per_seed"]
    assert "taken back from an earlier sitting" in (out / "bench.md").read_text()


@pytest.mark.slow  # benches end to end
def test_another_configuration_or_no_resume_runs_every_seed(first: tuple[Path, dict[str, Any]], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out, _ = first
    ran = _counting(monkeypatch)
    for folder in ("other", "again"):  # each holds seeds 0 and 1 as the first run kept them
        (tmp_path / folder / "seeds").mkdir(parents=True)
        for seed in (0, 1):
            (tmp_path / folder / "seeds" / f"seed-{seed}.pt").write_bytes(
                (out / "seeds" / f"seed-{seed}.pt").read_bytes())
    run_and_report(replace(CONFIG, recipe=TrainConfig(epochs=2)), tmp_path / "other", command=None,
                   provenance=("c" * 40, False), resume=True)  # another recipe: the kept seeds are not its own
    run_and_report(CONFIG, tmp_path / "again", command=None, provenance=("c" * 40, False))  # no --resume
    assert ran == [0, 1, 0, 1]
