"""Unlearning rounds without training beside them ([unlearning].train_beside = false), through the whole
server loop with scripted nodes: the requesters run their method alone, nobody else is asked to train, and
each step is still bounded, by the norms of the run's last own training round."""

from __future__ import annotations

from dataclasses import replace

from flwr.app import Message

from fedunlearn.common import protocol as P
from fedunlearn.common.scenario import Scenario
from tests.server.faults import huge, replacing_arrays
from tests.server.in_process import tiny_scenario
from tests.server.scripted import assert_only_audited_commits, scripted_run


def _without_training(scenario: Scenario) -> Scenario:
    return replace(scenario, unlearning=replace(scenario.unlearning, train_beside=False))


def _trainings_of(sent: list[Message], node: int) -> int:
    return sum(m.metadata.dst_node_id == node and m.metadata.message_type == P.MSG_TRAIN for m in sent)


def test_an_unlearning_round_without_training_asks_only_the_requesters() -> None:
    beside, _, beside_grid = scripted_run(tiny_scenario(baselines=False))
    alone, world, alone_grid = scripted_run(_without_training(tiny_scenario(baselines=False)))
    # node 102 requests nothing: it trains in each of the 4 training rounds, and in each unlearning round
    # only where the round trains beside the method
    unlearning_rounds = [sum(k == "unlearn" for k in p.round_kinds) for p in (beside.phases[0], alone.phases[0])]
    assert unlearning_rounds[0] >= 1 and _trainings_of(beside_grid.sent, 102) == 4 + unlearning_rounds[0]
    assert unlearning_rounds[1] >= 1 and _trainings_of(alone_grid.sent, 102) == 4
    unlearns = [m for m in alone_grid.sent if m.metadata.message_type == P.MSG_UNLEARN]
    assert unlearns and all(m.content.config_records[P.CONFIG][P.TRAIN_BESIDE] is False for m in unlearns)
    # the steps were applied in full: a small scripted step is well inside the last training round's bound
    work = [w for phase in alone.phases for w in phase.client_work]
    assert work and all(w.update_scale == 1.0 for w in work)
    assert alone.phases[0].passed
    assert_only_audited_commits(alone, world.nodes)


def test_without_training_a_huge_unlearning_update_is_bounded_by_the_last_training_round() -> None:
    record, world, _ = scripted_run(_without_training(tiny_scenario(baselines=False)),
                                    {100: replacing_arrays(P.MSG_UNLEARN, huge)})
    scales = [w.update_scale for phase in record.phases for w in phase.client_work if w.partition == 0]
    assert scales and all(0.0 < s < 1e-3 for s in scales)
    assert any("node 100's unlearning update was" in f and "scaled down" in f for f in record.failures)
    assert record.final_ta > 80.0
    assert_only_audited_commits(record, world.nodes)
