"""The ServerApp's run config: named values keep the scenario's settings; numbers and names override them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedunlearn.common import protocol as P
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.scenario import load_scenario
from fedunlearn.server.app import PROJECT_ROOT, nodes_root, scenario_from_config

SCENARIO = "simulations/digits-sample.toml"


def _scenario(**config: Any) -> Any:
    return scenario_from_config({P.RUN_SCENARIO: SCENARIO, **config})


def test_the_named_defaults_keep_the_scenario_as_written() -> None:
    written = load_scenario(PROJECT_ROOT / SCENARIO)
    assert _scenario(**P.RUN_KEEP) == written == _scenario()


def test_numbers_and_device_names_override_it() -> None:
    changed = _scenario(clients=4, rounds="40", device="cpu")
    assert (changed.federation.clients, changed.federation.rounds, changed.federation.device) == (4, 40, "cpu")


@pytest.mark.parametrize(("config", "words"), [
    ({"clients": "many"}, "clients='many': give a whole number >= 1, or 'auto'"),
    ({"rounds": -3}, "rounds='-3'"),
    ({"rounds": 2.5}, "rounds='2.5'"),
])
def test_a_count_that_is_not_one_is_refused(config: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        _scenario(**config)


def test_the_old_zero_and_empty_sentinels_still_keep_it_with_a_warning() -> None:
    with pytest.warns(FutureWarning, match="rounds=0 is deprecated.*write rounds='scenario'"):
        assert _scenario(rounds=0) == _scenario()
    with pytest.warns(FutureWarning, match="nodes-root=''"):
        assert nodes_root({P.RUN_NODES_ROOT: ""}) is None


def test_nodes_root_is_none_in_a_deployment_and_a_path_in_a_simulation(tmp_path: Path) -> None:
    assert nodes_root({P.RUN_NODES_ROOT: "none"}) is None
    assert nodes_root({}) is None
    assert nodes_root({P.RUN_NODES_ROOT: str(tmp_path)}) == tmp_path.resolve()
