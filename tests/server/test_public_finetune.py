"""The server fine-tunes each unlearning round's model on images no client holds, never the validation images
that size the steps, and the phase hands the gate the fine-tuned model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fedunlearn.common.checkpoint import state_sha256
from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.data.splits import federation_pool
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import ModelSpec, build_model, model_with_weights
from fedunlearn.common.scenario import Scenario, parse_scenario
from fedunlearn.common.training import accuracy
from fedunlearn.common.world import SimulatedWorld
from fedunlearn.server import public_finetune as module
from fedunlearn.server.app import run
from fedunlearn.server.evaluation import validation_evaluator
from fedunlearn.server.federation import Federation
from fedunlearn.server.public_finetune import public_finetune
from tests.server.in_process import in_process_grid, tiny_scenario

SPEC = ModelSpec("mlp", 1, 8, 10)
CPU = torch.device("cpu")


def _scenario(**unlearning: Any) -> Scenario:
    return parse_scenario({"scenario": {"name": "s"}, "data": {"dataset": "digits", "train_size": 900},
                           "unlearning": unlearning})


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_dataset("digits")


def test_off_unless_asked_and_bad_settings_are_refused(digits: Any) -> None:
    assert public_finetune(_scenario(), SPEC, digits, CPU) is None
    for bad, key in (({"public_finetune_images": 0}, "public_finetune_images"),
                     ({"public_finetune_epochs": 0}, "epochs"), ({"public_finetune_lr": 0.0}, "lr"),
                     ({"public_finetune_scope": "stem"}, "public_finetune_scope"),
                     ({"public_finetune_scope": 1}, "public_finetune_scope")):
        with pytest.raises(ConfigError, match=key):
            _scenario(**bad)


def test_the_images_are_public_and_never_the_validation_images(digits: Any) -> None:
    pool, public = federation_pool(digits.train, 900, 0)
    tuning = public_finetune(_scenario(public_finetune_images=100), SPEC, digits, CPU)
    assert tuning is not None and len(tuning.images) == 100
    assert set(tuning.images.ids.tolist()) <= set(public.ids.tolist())
    searching = _scenario(public_finetune_images=100, step_scales=[1.0, 0.5])
    # digits leaves 448 public images: the validation takes them all, none is left to fine-tune on
    with pytest.raises(ConfigError, match="beside the validation images"):
        public_finetune(searching, SPEC, digits, CPU)
    with pytest.raises(ConfigError, match="only 448"):
        public_finetune(_scenario(public_finetune_images=449), SPEC, digits, CPU)
    with pytest.raises(ConfigError, match="train_size"):
        public_finetune(parse_scenario({"scenario": {"name": "s"}, "unlearning": {"public_finetune_images": 10}}),
                        SPEC, digits, CPU)
    validation = validation_evaluator(searching, SPEC, digits, CPU)
    assert validation is not None and not set(validation.test.ids.tolist()) & set(pool.ids.tolist())


def test_the_fine_tune_fits_the_public_images_and_leaves_its_input_alone(digits: Any) -> None:
    tuning = public_finetune(_scenario(public_finetune_images=300, public_finetune_epochs=5,
                                       public_finetune_lr=3e-3), SPEC, digits, CPU)
    assert tuning is not None
    start = build_model(SPEC, seed=0).state_dict()
    before = {k: v.clone() for k, v in start.items()}
    tuned = tuning(start, round_seed=7)
    assert all(torch.equal(start[k], before[k]) for k in start)
    fit = accuracy(model_with_weights(SPEC, tuned), tuning.images, device=CPU)
    assert fit > accuracy(model_with_weights(SPEC, start), tuning.images, device=CPU) + 30
    again = tuning(start, round_seed=7)
    assert all(torch.equal(again[k], tuned[k]) for k in tuned)  # the batch order comes from the seeds


def test_a_top_fine_tune_trains_neck_and_head_only_and_fits_as_well(digits: Any) -> None:
    settings = {"public_finetune_images": 300, "public_finetune_epochs": 5, "public_finetune_lr": 3e-3}
    whole = public_finetune(_scenario(**settings), SPEC, digits, CPU)
    top = public_finetune(_scenario(**settings, public_finetune_scope="top"), SPEC, digits, CPU)
    assert whole is not None and top is not None and top.scope == "top"
    start = build_model(SPEC, seed=0).state_dict()
    tuned = {scope: tuning(start, round_seed=7) for scope, tuning in (("all", whole), ("top", top))}
    for scope, state in tuned.items():
        stem_kept = all(torch.equal(state[k], start[k]) for k in start if k.startswith("stem."))
        top_moved = all(not torch.equal(state[k], start[k]) for k in start if not k.startswith("stem."))
        assert stem_kept is (scope == "top") and top_moved
        assert accuracy(model_with_weights(SPEC, state), top.images, device=CPU) > 80


@pytest.mark.slow
def test_the_gate_judges_each_unlearning_round_after_the_fine_tune(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    base = tiny_scenario(baselines=False)
    scenario = parse_scenario({
        "scenario": {"name": "tiny-public", "seed": 0},
        "data": {"dataset": "digits", "partitioner": "iid", "train_size": 900},
        "federation": {"clients": 3, "rounds": 3, "local_epochs": 1, "batch_size": 32, "device": "cpu"},
        "unlearning": {"max_rounds": 2, "params": {"max_steps": 40}, "public_finetune_images": 200},
        "baselines": {"federated_retrain": False, "federated_finetune_rounds": 0},
        "audit": {"reference_models": 2, "reference_epochs": 2},
        "requests": [{"round": 2, "partition": r.partition, "forget": r.forget} for r in base.requests],
    })
    tuned: list[str] = []
    real_call = module.PublicFinetune.__call__

    def recorded(self: module.PublicFinetune, state: Any, round_seed: int) -> dict[str, torch.Tensor]:
        result = real_call(self, state, round_seed)
        tuned.append(state_sha256(result))
        return result

    monkeypatch.setattr(module.PublicFinetune, "__call__", recorded)
    audited: list[str] = []
    real_audit = Federation.audit

    def audit(self: Any, state: Any, requesters: Any, label: str) -> Any:
        if label.startswith("unlearn-"):
            audited.append(state_sha256(state))
        return real_audit(self, state, requesters, label)

    monkeypatch.setattr(Federation, "audit", audit)
    world = SimulatedWorld(scenario, tmp_path / "nodes")
    run(in_process_grid(world), scenario, {}, tmp_path / "run", world=world)
    unlearning = json.loads((tmp_path / "run" / "report.json").read_text())["unlearning"]
    assert len(tuned) == unlearning["round_kinds"].count("unlearn") >= 1
    # the gate judged what the fine-tune returned (a repair round, if any, is audited too)
    assert audited[0] == tuned[0] and set(tuned) <= set(audited)
