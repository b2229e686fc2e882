"""A phase lends its audits the server's test images: a class phase those of the class, so requesters whose
sealed hold-out holds none of it are audited and pooled, never left pending for want of non-members; a sample
phase, when the scenario asks, test images each requester keeps in its forget set's class mix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedunlearn.common import protocol as P
from fedunlearn.common.audit.exemplars import exemplars_from_record
from fedunlearn.common.data.splits import holdout_roles
from fedunlearn.common.nodes import NodeDirectory
from fedunlearn.common.scenario import Scenario, parse_scenario
from fedunlearn.common.world import SimulatedWorld
from fedunlearn.server.app import run
from tests.server.in_process import in_process_grid

FORGOTTEN = 3


def _scenario(*, partitioner: str, clients: int, rounds: int, audit: dict[str, Any],
              requests: list[dict[str, Any]]) -> Scenario:
    """A small digits federation with one short unlearning round and two cheap reference models."""
    return parse_scenario({
        "scenario": {"name": "tiny-lent", "seed": 0},
        "data": {"dataset": "digits", "partitioner": partitioner, "train_size": 900},
        "federation": {"clients": clients, "rounds": rounds, "local_epochs": 1, "batch_size": 32, "device": "cpu"},
        "unlearning": {"max_rounds": 1, "max_attempts": 1, "params": {"max_steps": 20}},
        "baselines": {"federated_retrain": False, "federated_finetune_rounds": 0},
        "audit": {"reference_models": 2, "reference_epochs": 2, **audit},
        "requests": requests,
    })


@pytest.mark.slow
def test_requesters_without_unseen_images_of_the_class_are_audited_on_the_lent_ones(tmp_path: Path) -> None:
    scenario = _scenario(partitioner="dirichlet:0.3", clients=4, rounds=3, audit={},
                         requests=[{"round": 2, "partition": "all", "forget": f"class:{FORGOTTEN}"}])
    world = SimulatedWorld(scenario, tmp_path / "nodes")
    grid = in_process_grid(world)
    sealed_of_class = {node: int((holdout_roles(NodeDirectory.open(path).holdout()).audit.y == FORGOTTEN).sum())
                       for node, path in grid.node_dirs.items()}
    record = run(grid, scenario, {}, tmp_path / "run", world=world)

    audits = [m for m in grid.sent if m.metadata.message_type == P.MSG_AUDIT]
    requesters = {m.metadata.dst_node_id for m in audits}
    assert any(sealed_of_class[node] == 0 for node in requesters), (
        f"the split must leave a requester without sealed images of the class: {sealed_of_class}")
    lent = exemplars_from_record(audits[0].content.array_records[P.EXEMPLARS], input_shape=(1, 8, 8), num_classes=10)
    assert set(lent.data.y.tolist()) == {FORGOTTEN} and lent.statistic is not None and lent.statistic.shape[0] == 2
    assert all(P.EXEMPLARS in m.content.array_records for m in audits)
    sizes = {r.metadata.src_node_id: int(r.content.metric_records[P.METRICS][P.HOLDOUT_SIZE])
             for r in grid.received if r.metadata.message_type == P.MSG_AUDIT and r.has_content()}
    assert sizes == {node: sealed_of_class[node] + len(lent) for node in requesters}
    (phase,) = record.phases
    assert phase.gate is not None and set(phase.gate_nodes) == requesters
    assert not [f for f in record.failures if "not pooled" in f], record.failures


@pytest.mark.slow
def test_a_sample_phase_lends_test_images_when_asked_and_each_requester_adds_some_to_its_sealed_part(
        tmp_path: Path) -> None:
    scenario = _scenario(partitioner="iid", clients=3, rounds=2, audit={"lent_test_images": 200},
                         requests=[{"round": 1, "partition": p, "forget": "random:0.2"} for p in (0, 2)])
    world = SimulatedWorld(scenario, tmp_path / "nodes")
    grid = in_process_grid(world)
    sealed = {node: len(holdout_roles(NodeDirectory.open(path).holdout()).audit)
              for node, path in grid.node_dirs.items()}
    run(grid, scenario, {}, tmp_path / "run", world=world)

    audits = [m for m in grid.sent if m.metadata.message_type == P.MSG_AUDIT]
    lent = exemplars_from_record(audits[0].content.array_records[P.EXEMPLARS], input_shape=(1, 8, 8), num_classes=10)
    assert len(lent) == 200 and len(set(lent.data.y.tolist())) == 10 and lent.statistic is not None
    assert all(P.EXEMPLARS in m.content.array_records for m in audits)
    sizes = {r.metadata.src_node_id: int(r.content.metric_records[P.METRICS][P.HOLDOUT_SIZE])
             for r in grid.received if r.metadata.message_type == P.MSG_AUDIT and r.has_content()}
    assert len(sizes) == 2 and all(sealed[node] < size <= sealed[node] + len(lent) for node, size in sizes.items())
