"""Scenario files: the shipped ones parse, and every mistake is a ConfigError naming its TOML path."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from fedunlearn.common.audit.gate import GateConfig
from fedunlearn.common.errors import ConfigError, UnknownNameError
from fedunlearn.common.scenario import Scenario, load_scenario, parse_scenario

SIMULATIONS = Path(__file__).resolve().parent.parent / "simulations"
SHIPPED = sorted(SIMULATIONS.glob("*.toml"))

BASE: dict[str, Any] = {
    "scenario": {"name": "test", "seed": 3},
    "data": {"dataset": "digits", "partitioner": "iid"},
    "federation": {"clients": 3, "rounds": 5, "model": "mlp"},
    "unlearning": {"method": "remi"},
    "requests": [{"round": 2, "partition": 1, "forget": "random:0.1"}],
}


ALL_NEEDS_CLASS = '[requests[0]]: partition = "all" only fits class requests'


def _doc(**changes: Any) -> dict[str, Any]:
    """BASE with ``section={key: value}`` merged in (a value of None deletes the key)."""
    doc = copy.deepcopy(BASE)
    for section, table in changes.items():
        if isinstance(table, dict) and isinstance(doc.get(section), dict):
            for key, value in table.items():
                if value is None:
                    doc[section].pop(key, None)
                else:
                    doc[section][key] = value
        else:
            doc[section] = table
    return doc


def test_the_simulations_ship_scenarios() -> None:
    assert {p.stem for p in SHIPPED} >= {"digits-sample", "digits-class", "digits-client"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_scenario_parses(path: Path) -> None:
    scenario = load_scenario(path)
    assert isinstance(scenario, Scenario)
    assert scenario.name == path.stem
    if "deploy" not in scenario.name:  # a deployment's requests come from its nodes' operators
        assert scenario.requests, "a simulation scenario files at least one request"
    for request in scenario.requests:
        assert 1 <= request.round < scenario.federation.rounds


def test_values_and_defaults() -> None:
    scenario = parse_scenario(BASE)
    assert scenario.seed == 3
    assert (scenario.federation.clients, scenario.federation.rounds, scenario.federation.model) == (3, 5, "mlp")
    assert scenario.federation.batch_size == 32  # default
    assert scenario.gate == GateConfig()
    assert scenario.requests[0].partition == 1
    assert scenario.requests[0].reason == "simulated data-subject request"
    recipe = scenario.federation.recipe()
    assert (recipe.schedule, recipe.epochs) == ("constant", 1)
    assert parse_scenario(_doc(unlearning={"params": {"lr": 0.01}})).unlearning.params == {"lr": 0.01}
    assert parse_scenario(_doc(data={"train_size": None})).data.train_size is None


def test_a_federation_runs_remi_with_its_federated_defaults_under_the_scenarios_params() -> None:
    assert parse_scenario(BASE).unlearning.method_params() == {"noise_z": 0.5, "patience": 3}
    chosen = parse_scenario(_doc(unlearning={"params": {"noise_z": 2.0, "lr": 0.01}})).unlearning
    assert chosen.method_params() == {"noise_z": 2.0, "patience": 3, "lr": 0.01}
    assert parse_scenario(_doc(unlearning={"method": "finetune"})).unlearning.method_params() == {}
    with pytest.raises(ConfigError, match="noise_z"):
        parse_scenario(_doc(unlearning={"params": {"noise_z": -1}}))


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"bogus": {"x": 1}}, "unknown section(s) bogus"),
        ({"federation": {"epochs": 2}}, "[federation] has unknown key(s) epochs"),
        ({"gate": {"tolerance": 0.1}}, "[gate] has unknown key(s) tolerance"),
        ({"requests": [{"round": 2, "partition": 1, "forget": "all", "when": 3}]},
         "[requests[0]] has unknown key(s) when"),
        ({"federation": {"rounds": "5"}}, "[federation].rounds"),
        ({"federation": {"clients": 2.5}}, "[federation].clients"),
        ({"federation": {"clients": True}}, "[federation].clients"),
        ({"data": {"holdout_fraction": "0.2"}}, "[data].holdout_fraction"),
        ({"baselines": {"federated_retrain": 1}}, "[baselines].federated_retrain"),
        ({"unlearning": {"params": "lr=0.1"}}, "[unlearning].params"),
        ({"unlearning": {"params": {"bogus": 1}}}, "[unlearning].params"),
        ({"requests": [{"round": 2, "partition": 1.0, "forget": "all"}]}, "[requests[0]].partition"),
        ({"data": {"dataset": "imagenet"}}, "[data].dataset"),
        ({"data": {"partitioner": "dirichlet"}}, "[data].partitioner"),
        ({"federation": {"model": "vgg"}}, "[federation].model"),
        ({"unlearning": {"method": "magic"}}, "[unlearning].method"),
        ({"federation": {"rounds": 0}}, "[federation].rounds"),
        ({"federation": {"optimizer": "lbfgs"}}, "[federation]"),
        ({"federation": {"round_timeout": 0}}, "[federation].round_timeout"),
        ({"gate": {"auc_margin": -0.1}}, "[gate].auc_margin"),
        ({"unlearning": {"update_clip": -1.0}}, "[unlearning].update_clip"),
        ({"unlearning": {"train_beside": "no"}}, "[unlearning].train_beside"),
        ({"unlearning": {"public_finetune_scope": "stem"}}, "public_finetune_scope must be 'all' or 'top'"),
        ({"federation": {"update_clip": 0.5}}, "[federation].update_clip must be 0 (no bound) or >= 1"),
        ({"scenario": {"name": 7}}, "[scenario].name"),
        ({"scenario": {"name": "x", "seed": "0"}}, "[scenario].seed"),
        ({"requests": {"round": 2}}, "requests must be an array"),
        ({"requests": [{"round": 0, "partition": 1, "forget": "all"}]}, "[requests[0]].round"),
        ({"requests": [{"round": 5, "partition": 1, "forget": "all"}]}, "[requests[0]].round"),
        ({"requests": [{"round": 2, "partition": 1, "forget": "all"},
                       {"round": 2, "partition": 3, "forget": "all"}]}, "[requests[1]].partition"),
        ({"requests": [{"round": 2, "partition": -1, "forget": "all"}]}, "[requests[0]].partition"),
        ({"requests": [{"round": 2, "partition": "some", "forget": "all"}]}, "[requests[0]].partition"),
        ({"requests": [{"round": 2, "partition": "all", "forget": "random:0.1"}]}, ALL_NEEDS_CLASS),
        ({"requests": [{"round": 2, "partition": "all", "forget": "ids:1,2"}]}, ALL_NEEDS_CLASS),
        ({"requests": [{"round": 2, "partition": 0, "forget": "half"}]}, "[requests[0]].forget"),
        ({"requests": [{"round": 2, "partition": 0}]}, "[requests[0]] is missing key(s) forget"),
        ({"requests": [{"forget": "all"}]}, "[requests[0]] is missing key(s) round, partition"),
        ({"requests": ["round 2"]}, "[requests[0]] must be a table"),
        ({"federation": 5}, "[federation] must be a table"),
        ({"audit": {"lent_test_images": 0}}, "[audit]: lent_test_images must be >= 1"),
        ({"audit": {"lent_test_images": 100}, "data": {"mislabeled": {"0": 0.2}}}, "[audit].lent_test_images"),
    ],
)
def test_mistakes_name_their_toml_path(changes: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(path)):
        parse_scenario(_doc(**changes))


def test_the_gates_old_key_names_still_parse_for_one_release_with_a_warning() -> None:
    with pytest.warns(FutureWarning, match=r"\[gate\]\.auc_tolerance is now \[gate\]\.auc_margin"):
        scenario = parse_scenario(_doc(gate={"auc_tolerance": 0.02, "accuracy_band": 3.0}))
    assert (scenario.gate.auc_margin, scenario.gate.accuracy_margin) == (0.02, 3.0)
    with pytest.raises(ConfigError, match="sets both auc_tolerance and auc_margin"):
        parse_scenario(_doc(gate={"auc_tolerance": 0.02, "auc_margin": 0.01}))


def test_unknown_names_stay_unknown_name_errors_and_list_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"\[data\]\.dataset: unknown dataset 'imagenet'; valid names: .*digits"):
        parse_scenario(_doc(data={"dataset": "imagenet"}))


def test_class_requests_may_target_every_partition() -> None:
    scenario = parse_scenario(_doc(requests=[{"round": 4, "partition": "all", "forget": "class:3"}]))
    assert scenario.requests[0].partition == "all"


def test_with_overrides_applies_and_revalidates() -> None:
    scenario = parse_scenario(BASE)
    changed = scenario.with_overrides(clients=4, rounds=8, device="cpu")
    assert (changed.federation.clients, changed.federation.rounds, changed.federation.device) == (4, 8, "cpu")
    assert scenario.federation.rounds == 5  # the original is untouched
    assert scenario.with_overrides() == scenario
    with pytest.raises(ConfigError, match=re.escape("[federation].clients")):
        scenario.with_overrides(clients=0)
    with pytest.raises(ConfigError, match=re.escape("[requests[0]].round must be in 1..1")):
        scenario.with_overrides(rounds=2)  # the request after round 2 no longer fits
    with pytest.raises(ConfigError, match=re.escape("[requests[0]].partition")):
        scenario.with_overrides(clients=1)


def test_load_scenario_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_scenario(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[scenario]\nname = \"x\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(broken)
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario]\nname = \"x\"\n[federation]\nrounds = \"thirty\"\n")
    with pytest.raises(ConfigError, match=re.escape("[federation].rounds")):
        load_scenario(bad)
