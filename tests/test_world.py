"""The simulated world: node directories for every client and the scheduled requests filed between rounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.data.tensors import DatasetBundle
from fedunlearn.common.nodes import RequestStatus
from fedunlearn.common.scenario import Scenario, parse_scenario
from fedunlearn.common.world import SimulatedWorld, partition_dir

CLIENTS = 3
FORGET_CLASS = 4


@pytest.fixture(scope="module")
def digits() -> DatasetBundle:
    return load_dataset("digits")


def _scenario(partitioner: str, requests: list[dict[str, Any]]) -> Scenario:
    return parse_scenario({
        "scenario": {"name": "world-test", "seed": 0},
        "data": {"dataset": "digits", "partitioner": partitioner},
        "federation": {"clients": CLIENTS, "rounds": 6, "model": "mlp"},
        "requests": requests,
    })


SAMPLE_AND_LEAVE = [
    {"round": 1, "partition": 0, "forget": "random:0.1"},
    {"round": 2, "partition": 2, "forget": "all", "reason": "client 2 leaves"},
    {"round": 2, "partition": 1, "forget": "random:0.1"},
]


@pytest.fixture
def world(tmp_path: Path, digits: DatasetBundle) -> SimulatedWorld:
    world = SimulatedWorld(_scenario("dirichlet:0.5", SAMPLE_AND_LEAVE), tmp_path / "nodes", bundle=digits)
    world.materialise()
    return world


def test_materialise_creates_every_partition(tmp_path: Path, digits: DatasetBundle) -> None:
    world = SimulatedWorld(_scenario("iid", []), tmp_path / "nodes", bundle=digits)
    paths = world.materialise()
    assert paths == [tmp_path / "nodes" / f"partition-{i}" for i in range(CLIENTS)]
    assert paths == [partition_dir(tmp_path / "nodes", i) for i in range(CLIENTS)]
    assert sorted(p.name for p in (tmp_path / "nodes").iterdir()) == [f"partition-{i}" for i in range(CLIENTS)]
    ids = [set(world.node(i).train().ids.tolist()) for i in range(CLIENTS)]
    assert all(ids) and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    for i in range(CLIENTS):
        assert world.node(i).layout == world.layout(i)


def test_materialise_is_idempotent_and_keeps_ledgers(world: SimulatedWorld) -> None:
    node = world.node(1)
    request = node.submit(ids=node.train().ids[:2].tolist(), reason="before a restart")
    before = [world.node(i).meta["files"] for i in range(CLIENTS)]
    assert world.materialise() == [partition_dir(world.nodes_root, i) for i in range(CLIENTS)]
    assert [world.node(i).meta["files"] for i in range(CLIENTS)] == before
    assert world.node(1).ledger.get(request.request_id).status is RequestStatus.PENDING


def test_file_due_files_exactly_the_requests_of_the_round(world: SimulatedWorld) -> None:
    assert world.file_due(3) == [] and world.filed == []
    retain = {i: world.node(i).retain() for i in range(CLIENTS)}

    first = world.file_due(1)
    assert [(f.partition, f.kind, f.round) for f in first] == [(0, "ids", 1)]
    assert [r.request_id for r in world.node(0).ledger.list()] == [first[0].request_id]
    assert world.node(1).ledger.list() == [] and world.node(2).ledger.list() == []

    second = world.file_due(2)
    assert [(f.partition, f.kind, f.round) for f in second] == [(2, "all", 2), (1, "ids", 2)]
    assert world.filed == first + second
    assert len(world.node(0).ledger.list()) == 1  # round 2 filed nothing more on partition 0

    for filed in first + second:
        request = world.node(filed.partition).ledger.get(filed.request_id)
        assert filed.forget_ids == request.sample_ids
        assert request.status is RequestStatus.PENDING
        assert set(filed.forget_ids) <= set(retain[filed.partition].ids.tolist())
    for filed in (first[0], second[1]):  # random:0.1 -> 10% of the node's retain
        assert len(filed.forget_ids) == round(0.1 * len(retain[filed.partition]))
    leaving = second[0]
    assert sorted(leaving.forget_ids) == sorted(retain[2].ids.tolist())  # "all" -> every sample
    assert world.node(2).ledger.get(leaving.request_id).reason == "client 2 leaves"
    assert len(world.node(2).retain()) == 0


def test_random_requests_are_seeded(tmp_path: Path, digits: DatasetBundle) -> None:
    filed = []
    for name in ("a", "b"):
        world = SimulatedWorld(_scenario("dirichlet:0.5", SAMPLE_AND_LEAVE), tmp_path / name, bundle=digits)
        world.materialise()
        filed.append([f.forget_ids for f in world.file_due(1)])
    assert filed[0] == filed[1]


def test_a_class_request_for_all_files_on_every_partition_holding_the_class(
    tmp_path: Path, digits: DatasetBundle
) -> None:
    # the class partitioner gives each partition whole classes, so exactly one partition holds FORGET_CLASS
    scenario = _scenario("class", [{"round": 3, "partition": "all", "forget": f"class:{FORGET_CLASS}"}])
    world = SimulatedWorld(scenario, tmp_path / "nodes", bundle=digits)
    world.materialise()
    holders = [i for i in range(CLIENTS) if FORGET_CLASS in world.node(i).train().y.tolist()]
    assert len(holders) == 1

    filed = world.file_due(3)
    assert [f.partition for f in filed] == holders
    assert all(f.kind == "class" for f in filed)
    for partition in range(CLIENTS):
        node = world.node(partition)
        if partition in holders:
            train = node.train()
            expected = sorted(train.ids[train.y == FORGET_CLASS].tolist())
            (request,) = node.ledger.list()
            assert list(request.sample_ids) == expected
            assert request.target_class == FORGET_CLASS
            assert filed[0].forget_ids == request.sample_ids
        else:
            assert node.ledger.list() == []


def test_a_class_request_with_dirichlet_skips_partitions_without_the_class(
    tmp_path: Path, digits: DatasetBundle
) -> None:
    classes = (0, FORGET_CLASS)  # with seed 0, partition 0 holds no digit 0
    scenario = _scenario("dirichlet:0.5", [{"round": 1, "partition": "all", "forget": f"class:{k}"} for k in classes])
    world = SimulatedWorld(scenario, tmp_path / "nodes", bundle=digits)
    world.materialise()
    labels = {i: set(world.node(i).train().y.tolist()) for i in range(CLIENTS)}
    holding = [(i, k) for k in classes for i in range(CLIENTS) if k in labels[i]]
    assert len(holding) < len(classes) * CLIENTS, "every partition holds both classes: the test checks nothing"
    filed = world.file_due(1)
    assert [(f.partition, world.node(f.partition).ledger.get(f.request_id).target_class) for f in filed] == holding
