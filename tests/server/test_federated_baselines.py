"""The federated baselines FedEraser and projected gradient ascent: the calibration rule and the storage
it needs on constructed numbers, their place in a scripted federation's report, and their configuration."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from fedunlearn.common import protocol as P
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import build_model
from fedunlearn.common.scenario import BaselinePlan, Scenario, parse_scenario
from fedunlearn.common.unlearning.projected_ascent import PROJECTED_ASCENT
from fedunlearn.server.federaser import calibrated_update, calibration_epochs, calibration_recipe, federaser
from fedunlearn.server.federation import Federation
from fedunlearn.server.messaging import Messenger
from fedunlearn.server.report import build_report, render_markdown
from fedunlearn.server.update_history import UpdateHistory
from tests.server.in_process import InProcessGrid, tiny_scenario
from tests.server.scripted import SPEC, ScriptedNode, scripted_client_app, scripted_run


def _scenario(**baselines: Any) -> Scenario:
    """The tiny scenario (requests after round 2 of 4) with four local epochs and the given baselines."""
    return replace(tiny_scenario(local_epochs=4), baselines=BaselinePlan(federated_finetune_rounds=1, **baselines))


def test_calibrated_update_takes_the_fresh_length_and_the_stored_direction_per_layer() -> None:
    stored = {"w": torch.tensor([3.0, 4.0]), "b": torch.tensor([0.0, -2.0]), "still": torch.zeros(2)}
    fresh = {"w": torch.tensor([0.0, 10.0]), "b": torch.tensor([0.5, 0.0]), "still": torch.ones(2)}
    calibrated = calibrated_update(stored, fresh)
    assert torch.allclose(calibrated["w"], torch.tensor([6.0, 8.0]))  # length 10, direction (0.6, 0.8)
    assert torch.allclose(calibrated["b"], torch.tensor([0.0, -0.5]))  # length 0.5, direction (0, -1)
    assert torch.equal(calibrated["still"], torch.zeros(2))  # no stored direction: no step


@pytest.mark.parametrize(("epochs", "ratio", "expected"), [(3, 0.5, 2), (4, 0.5, 2), (1, 0.5, 1), (10, 0.7, 7),
                                                             (5, 1.0, 5), (2, 0.01, 1)])
def test_calibration_runs_whole_epochs_rounded_up(epochs: int, ratio: float, expected: int) -> None:
    assert calibration_epochs(epochs, ratio) == expected


def test_the_history_keeps_every_kth_round_and_counts_its_bytes() -> None:
    model = {"w": torch.zeros(10), "b": torch.zeros(2, dtype=torch.float64),
             "count": torch.zeros((), dtype=torch.int64)}
    returned = {node: {key: value + 1 for key, value in model.items()} for node in (100, 101, 102)}
    history = UpdateHistory()
    for round_ in range(1, 6):
        history.keep(round_, 2, model, returned)
    assert [stored.round for stored in history.rounds] == [1, 3, 5]
    assert set(history.rounds[0].updates[100]) == {"w", "b"}  # integer buffers are not updates
    start = 10 * 4 + 2 * 8 + 8  # the starting model, counter included
    assert history.storage_bytes == start + 3 * 3 * (10 * 4 + 2 * 8)  # rounds x nodes x one update
    off = UpdateHistory()
    off.keep(1, 0, model, returned)
    assert off.start is None and off.storage_bytes == 0


def test_federaser_asks_only_nodes_that_still_hold_data_with_the_calibration_recipe() -> None:
    nodes = {100 + i: ScriptedNode(partition=i) for i in range(3)}
    grid = InProcessGrid(scripted_client_app(nodes), {n: Path(f"scripted-{n}") for n in nodes})  # type: ignore[arg-type]
    scenario = _scenario(federaser_interval=1)
    fed = Federation(Messenger(grid, timeout=60), scenario, grid.get_node_ids())  # type: ignore[arg-type]
    start = build_model(SPEC, seed=0).state_dict()
    fed.history.keep(1, 1, start, {n: {k: v + 1 for k, v in start.items()} for n in nodes})
    anchor = federaser(fed, [100, 101], calibration_recipe(scenario.federation.recipe(), scenario.baselines))
    asked = [m for m in grid.sent if m.metadata.group_id == "federaser-1"]
    assert sorted(m.metadata.dst_node_id for m in asked) == [100, 101]
    assert {json.loads(str(m.content.config_records[P.CONFIG][P.RECIPE]))["epochs"] for m in asked} == {2}
    assert anchor.rounds == 1 and anchor.storage_bytes == fed.history.storage_bytes > 0


def test_with_every_round_stored_and_unchanged_nodes_federaser_replays_the_original_training() -> None:
    """Scripted nodes train the same way every time, so each calibration update has its stored update's
    length and direction: the rebuilt model is the original (none of the samples ever changed)."""
    record, _, _ = scripted_run(_scenario(federaser_interval=1))
    [phase] = record.phases
    assert phase.baselines["federaser"].rounds == 2  # rounds 1 and 2 ran before the phase
    for key, value in phase.states["original"].items():
        assert torch.allclose(phase.states["federaser"][key], value, atol=1e-6), key


def test_the_report_carries_both_baselines_with_cost_storage_and_verdict() -> None:
    scenario = _scenario(federaser_interval=2, pga=True, pga_finetune_rounds=2)
    record, _, grid = scripted_run(scenario)
    report = build_report(scenario, SPEC, record, {}, None, None)  # type: ignore[arg-type]
    erased, ascended = report["baselines"]["federaser"], report["baselines"]["pga"]
    for row in (erased, ascended):
        assert set(row) >= {"rounds", "seconds", "bytes", "ta", "ua", "forget_auc", "storage_bytes", "gate"}
        assert row["seconds"] > 0 and row["bytes"] > 0
        assert row["gate"]["attack"] and "rmia" in row["gate"]["attacks"]  # judged by the strong attacks
    # one of two rounds replayed leaves the model short of the scripted target: the gate says so
    assert not erased["gate"]["passed"] and "test accuracy dropped" in " ".join(erased["gate"]["reasons"])
    assert ascended["gate"]["passed"]
    assert erased["rounds"] == 1 and erased["storage_bytes"] > 0  # round 1 of the two before the phase
    assert ascended["rounds"] == 3 and ascended["storage_bytes"] == 0  # the ascent round, then two FedAvg rounds
    ascents = [m for m in grid.sent if m.metadata.message_type == P.MSG_UNLEARN
               and m.content.config_records[P.CONFIG][P.METHOD] == PROJECTED_ASCENT]
    assert len(ascents) == 2  # one per requester
    assert json.loads(str(ascents[0].content.config_records[P.CONFIG][P.METHOD_PARAMS]))["radius"] == 0.05
    assert not record.failures
    markdown = render_markdown(report)
    assert "| federaser | 1 |" in markdown and "| pga | 3 |" in markdown and "FedEraser kept" in markdown


def test_the_report_names_the_commit_the_run_started_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep's later runs must not take the commit HEAD moved to while an earlier one ran."""
    monkeypatch.setattr("fedunlearn.server.run.git_commit", lambda: ("a" * 40, False))
    record, _, _ = scripted_run(_scenario())
    report = build_report(_scenario(), SPEC, record, {}, None, None)  # type: ignore[arg-type]
    assert (report["commit"], report["dirty"]) == ("a" * 40, False)


def test_the_baselines_stay_out_of_the_report_when_off() -> None:
    record, _, _ = scripted_run(_scenario())
    report = build_report(_scenario(), SPEC, record, {}, None, None)  # type: ignore[arg-type]
    assert report["baselines"]["federaser"] is None and report["baselines"]["pga"] is None
    assert "FedEraser" not in render_markdown(report)


@pytest.mark.parametrize(("baselines", "message"), [
    ({"federaser_interval": -1}, "[baselines]: federaser_interval must be >= 0"),
    ({"federaser_calibration_ratio": 0}, "[baselines]: federaser_calibration_ratio must be in (0, 1]"),
    ({"federaser_calibration_ratio": 1.5}, "[baselines]: federaser_calibration_ratio must be in (0, 1]"),
    ({"pga_radius": 2.0}, "[baselines]: pga_radius: "),
    ({"pga_lr": 0}, "[baselines]: pga_lr: "),
    ({"pga_max_steps": 0}, "[baselines]: pga_max_steps: "),
    ({"pga_finetune_rounds": -1}, "[baselines]: pga_finetune_rounds must be >= 0"),
    ({"pga": "yes"}, "[baselines].pga must be bool"),
    ({"federaser_interval": 1.5}, "[baselines].federaser_interval must be int"),
])
def test_bad_baseline_settings_name_their_key(baselines: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scenario({"scenario": {"name": "bad"}, "baselines": baselines})
    assert message in str(caught.value)


def test_the_baselines_are_off_unless_asked() -> None:
    plan = parse_scenario({"scenario": {"name": "defaults"}}).baselines
    assert plan.federaser_interval == 0 and not plan.pga
    assert plan.pga_params() == {"radius": 0.05, "lr": 0.01, "max_steps": 100}
