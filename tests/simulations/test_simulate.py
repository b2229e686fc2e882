"""``fedunlearn simulate`` end to end on Flower's Simulation Runtime (Ray), in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedunlearn.common.nodes import NodeDirectory, RequestStatus
from tests.simulations.tiny import ROOT, tiny_scenario

SCENARIO = tiny_scenario("ray-check", (2, 0))


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # one local Ray cluster at a time
def test_simulate_runs_a_scenario_on_ray(tmp_path: Path) -> None:
    scenario = tmp_path / "ray-check.toml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "run"
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home")}
    done = subprocess.run([sys.executable, "-c", "from fedunlearn.simulations.cli import main; main()", "simulate",
                           str(scenario), "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "completed" and report["clients"] == 3
    assert report["unlearning"]["gate"]["passed"]
    assert len(report["training"]["ta_per_round"]) == 4
    assert sorted(r["partition"] for r in report["requests"]) == [0, 2]
    assert {r["status"] for r in report["requests"]} == {"committed"}
    forgotten = set(report["evaluation"]["forget_ids"])
    for partition in range(3):
        node = NodeDirectory.open(out / "nodes" / f"partition-{partition}")
        assert not forgotten & set(node.train().ids.tolist())
        assert all(r.status is RequestStatus.COMMITTED for r in node.ledger.list())
    for path in ("model.pt", "report.md", "accuracy.png", "forget_auc.png", "roc.png"):
        assert (out / path).is_file(), path
