"""The server sizes a round's unlearning steps on validation images no client holds: the largest allowed share
whose model keeps its accuracy, never the test split the gate and the report read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.data.splits import federation_pool
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import ModelSpec
from fedunlearn.common.scenario import parse_scenario
from fedunlearn.common.world import SimulatedWorld
from fedunlearn.server.app import run
from fedunlearn.server.evaluation import VALIDATION_SIZE, validation_evaluator
from fedunlearn.server.unlearning_phase import StepGuard
from tests.server.in_process import in_process_grid, tiny_scenario


class _Validation:
    """Accuracy that falls ten points per unit of ``w``'s distance from the original (zero)."""

    def ta(self, state: dict[str, torch.Tensor], classes: Any = ()) -> float:
        return 90.0 - 10.0 * float(state["w"].abs().max())


TRAINED = {"w": torch.zeros(2), "count": torch.tensor(3)}
FULL = {"w": torch.tensor([0.16, 0.0]), "count": torch.tensor(4)}


def test_the_largest_share_that_keeps_the_accuracy_is_applied() -> None:
    guard = StepGuard(_Validation(), 90.0, (1.0, 0.5, 0.25), max_drop=1.0)  # type: ignore[arg-type]
    applied, scale = guard.applied(TRAINED, FULL, ())
    assert scale == 0.5  # all of it costs 1.6 points, half of it 0.8
    torch.testing.assert_close(applied["w"], torch.tensor([0.08, 0.0]))
    assert int(applied["count"]) == 4  # integer buffers as the full update left them
    assert guard.applied(TRAINED, TRAINED, ())[1] == 1.0  # a step that costs nothing is applied whole


def test_when_no_share_keeps_the_accuracy_the_smallest_is_applied() -> None:
    guard = StepGuard(_Validation(), 90.0, (1.0, 0.5), max_drop=0.1)  # type: ignore[arg-type]
    applied, scale = guard.applied(TRAINED, FULL, ())
    assert scale == 0.5
    torch.testing.assert_close(applied["w"], torch.tensor([0.08, 0.0]))


@pytest.mark.parametrize("scales", [[], [0.5, 1.0], [1.0, 0.0], [1.5], ["half"]])
def test_step_scales_must_be_shares_largest_first(scales: list[Any]) -> None:
    with pytest.raises(ConfigError, match="step_scales"):
        parse_scenario({"scenario": {"name": "s"}, "unlearning": {"step_scales": scales}})


def test_validation_images_come_from_the_part_no_client_holds() -> None:
    scenario = parse_scenario({"scenario": {"name": "s"}, "data": {"dataset": "digits", "train_size": 900},
                               "unlearning": {"step_scales": [1, 0.5]}})
    bundle = load_dataset("digits")
    spec = ModelSpec("mlp", 1, 8, 10)
    validation = validation_evaluator(scenario, spec, bundle, torch.device("cpu"))
    assert validation is not None
    pool, public = federation_pool(bundle.train, 900, scenario.seed)
    assert 0 < len(validation.test) <= VALIDATION_SIZE
    assert set(validation.test.ids.tolist()) <= set(public.ids.tolist())
    assert not set(validation.test.ids.tolist()) & set(pool.ids.tolist())
    assert validation_evaluator(parse_scenario({"scenario": {"name": "s"}}), spec, bundle, torch.device("cpu")) is None
    everything = parse_scenario({"scenario": {"name": "s"}, "unlearning": {"step_scales": [1, 0.5]}})
    with pytest.raises(ConfigError, match="train_size"):
        validation_evaluator(everything, spec, bundle, torch.device("cpu"))


@pytest.mark.slow
def test_a_phase_that_searches_its_steps_reports_the_share_of_each_unlearning_round(tmp_path: Path) -> None:
    base = tiny_scenario(baselines=False)
    scenario = parse_scenario({
        "scenario": {"name": "tiny-steps", "seed": 0},
        "data": {"dataset": "digits", "partitioner": "iid", "train_size": 900},
        "federation": {"clients": 3, "rounds": 3, "local_epochs": 1, "batch_size": 32, "device": "cpu"},
        "unlearning": {"max_rounds": 2, "params": {"max_steps": 40}, "step_scales": [1.0, 0.5, 0.25]},
        "baselines": {"federated_retrain": False, "federated_finetune_rounds": 0},
        "audit": {"reference_models": 2, "reference_epochs": 2},
        "requests": [{"round": 2, "partition": r.partition, "forget": r.forget} for r in base.requests],
    })
    world = SimulatedWorld(scenario, tmp_path / "nodes")
    run(in_process_grid(world), scenario, {}, tmp_path / "run", world=world)
    unlearning = json.loads((tmp_path / "run" / "report.json").read_text())["unlearning"]
    assert len(unlearning["step_scales"]) == unlearning["round_kinds"].count("unlearn") >= 1
    assert set(unlearning["step_scales"]) <= {1.0, 0.5, 0.25}
