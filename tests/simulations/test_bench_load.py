"""The load benchmark at a tiny size: its JSON's shape and correctness figures (never its timings), and its pure
helpers on constructed inputs. The end-to-end tests are marked slow: they start two interpreters (server, trainer)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedunlearn.simulations.bench_load import (
    Settings,
    check_filed,
    latency_stats,
    main,
    percentile,
    plan_jobs,
    run_benchmark,
)

TINY = Settings(samples=400, requests=40, callers=4, idle_requests=10, invalid=0.1, conflicts=0.1, page_size=7)
STATS = {"count", "p50_ms", "p99_ms", "mean_ms", "max_ms"}


@pytest.fixture(scope="module")
def load_bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("load") / "load.json"
    run_benchmark(TINY, out)
    return dict(json.loads(out.read_text()), path=str(out))


@pytest.mark.slow
def test_the_json_names_its_source_and_every_phase(load_bench: dict[str, Any]) -> None:
    assert {"commit", "dirty", "command", "parameters", "machine", "phases", "checks", "passed"} <= set(load_bench)
    assert load_bench["command"].startswith("python -m fedunlearn.simulations.bench_load --out ")
    assert load_bench["parameters"]["train_samples"] == TINY.samples
    assert [p["phase"] for p in load_bench["phases"]] == ["idle", "concurrent", "loaded"]
    assert [p["attempts"] for p in load_bench["phases"]] == [TINY.idle_requests, TINY.idle_requests, TINY.requests]
    for phase in load_bench["phases"]:
        assert set(phase["latency_ms"]) == {"submit", "submit_refused", "status"}
        assert all(set(stats) == STATS for stats in phase["latency_ms"].values())
        assert phase["latency_ms"]["submit"]["count"] == phase["latency_ms"]["status"]["count"] == phase["acknowledged"]
    idle, concurrent, loaded = load_bench["phases"]
    assert idle["training"] is None and concurrent["training"] is None
    assert loaded["training"]["rounds_started"] >= 1


@pytest.mark.slow
def test_every_acknowledged_request_is_kept_once_and_listed_once(load_bench: dict[str, Any]) -> None:
    acknowledged = sum(p["acknowledged"] for p in load_bench["phases"])
    assert acknowledged == sum(p["expected_acknowledged"] for p in load_bench["phases"])
    assert sum(sum(p["refused"].values()) for p in load_bench["phases"]) > 0  # the planned refusals happened
    for where in ("ledger", "list"):
        check = load_bench["checks"][where]
        assert check["acknowledged"] == check["present"] == acknowledged
        assert check["duplicates"] == check["missing"] == check["mismatched"] == check["unexpected"] == 0
    listing = load_bench["checks"]["list"]
    assert listing["pages"] == -(-acknowledged // TINY.page_size) and listing["largest_page"] == TINY.page_size
    assert load_bench["passed"]


@pytest.mark.slow
def test_render_writes_the_tables_beside_the_json(load_bench: dict[str, Any]) -> None:
    main(["--render", load_bench["path"]])
    text = Path(load_bench["path"]).with_suffix(".md").read_text()
    assert f"python -m fedunlearn.simulations.bench_load --render {load_bench['path']}" in text
    assert text.count("| idle | 1 | no |") == 1 and "| loaded | 4 |" in text and "Overall: passed" in text


def test_percentiles_are_observed_values() -> None:
    values = [float(v) for v in range(1, 201)]
    assert (percentile(values, 50), percentile(values, 99), percentile([7.0], 99)) == (100.0, 198.0, 7.0)
    stats = latency_stats([0.001, 0.003])
    assert (stats["count"], stats["p50_ms"], stats["max_ms"]) == (2, 1.0, 3.0)
    assert latency_stats([]) == {"count": 0, "p50_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}


def test_check_filed_counts_each_kind_of_discrepancy() -> None:
    expected = {"a": 1, "b": 2, "c": 3}
    seen = [("a", 1), ("a", 1), ("b", 9), ("z", 0)]
    assert check_filed(expected, seen) == {"acknowledged": 3, "present": 2, "missing": 1, "duplicates": 1,
                                           "mismatched": 1, "unexpected": 1}


def test_planned_conflicts_each_borrow_a_different_plain_request() -> None:
    settings = Settings(ids_per_request=2, invalid=0.2, conflicts=0.3)
    jobs = plan_jobs("p", 200, iter(range(10_000)), itertools.count(10_000), settings, np.random.default_rng(0))
    plain = {job.ids[0]: job for job in jobs if job.planned_refusal is None}
    borrowed = [job.ids[-1] for job in jobs if job.planned_refusal == "conflict"]
    assert borrowed and len(set(borrowed)) == len(borrowed) and set(borrowed) <= set(plain)
    assert all(job.ids[-1] >= 10_000 for job in jobs if job.planned_refusal == "invalid")
    assert len({job.reason for job in jobs}) == len(jobs)
