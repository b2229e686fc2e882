"""One real federation for the session: the tiny scenario on real ClientApps in this process (no Ray),
run by ``server.app.run`` with its report, export and manifest. The happy-path, privacy and edge-export
tests all read it; none changes it."""

from __future__ import annotations

import json

import pytest

from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.world import SimulatedWorld
from fedunlearn.server.app import run
from tests.server.in_process import TinyRun, in_process_grid, shifted_ids, tiny_scenario


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """Sample ids are shifted far beyond any count, round or size, so a test can tell that no id reached
    the server (the data and the run are otherwise digits' as the scenario loads them)."""
    root = tmp_path_factory.mktemp("tiny-run")
    world = SimulatedWorld(tiny_scenario(), root / "nodes", bundle=shifted_ids(load_dataset("digits")))
    grid = in_process_grid(world)
    run(grid, world.scenario, {}, root / "run", world=world)  # type: ignore[arg-type]
    return TinyRun(json.loads((root / "run" / "report.json").read_text()), root, world, grid)
