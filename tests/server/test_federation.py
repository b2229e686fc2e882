"""The whole server loop against real ClientApps in this process (no Ray): happy path, privacy, faults.

The happy-path and privacy checks read the session's one federation (``tiny_run`` in conftest.py). Each
fault test runs a federation of its own, without baselines, and is marked slow; test_fault_replies.py makes
the same faults with scripted nodes in the default run."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from flwr.app import ConfigRecord, Message, RecordDict

from fedunlearn.client.app import create_client_app
from fedunlearn.common import protocol as P
from fedunlearn.common.models import ModelSpec
from fedunlearn.common.nodes import NodeDirectory, RequestStatus
from fedunlearn.common.world import SimulatedWorld
from fedunlearn.server.evaluation import CentralEvaluator
from fedunlearn.server.federation import Federation
from fedunlearn.server.messaging import Messenger
from fedunlearn.server.references import scenario_references
from fedunlearn.server.run import RunRecord, run_federation
from tests.server.faults import failing, huge, leaky_audit, nan, replacing_arrays, reshaped, silent
from tests.server.in_process import InProcessGrid, TinyRun, in_process_grid, tiny_scenario


def _world(tmp_path: Path, **changes: Any) -> SimulatedWorld:
    """A fault run's world: the tiny scenario (with ``changes``) without baselines, which decide nothing these
    faults touch and are checked on the session's federation (``tiny_run``)."""
    return SimulatedWorld(tiny_scenario(baselines=False, **changes), tmp_path / "nodes")


def _run(world: SimulatedWorld, grid: InProcessGrid) -> RunRecord:
    bundle = world.bundle
    spec = ModelSpec("cnn", 1, 8, bundle.num_classes)
    fed = Federation(Messenger(grid, timeout=60), world.scenario, grid.get_node_ids())  # type: ignore[arg-type]
    references = scenario_references(world.scenario, spec, bundle, torch.device("cpu"))
    return run_federation(fed, CentralEvaluator(spec, bundle.test, torch.device("cpu")), spec,
                          after_round=world.file_due, references=references)


@pytest.fixture
def happy(tiny_run: TinyRun) -> tuple[dict[str, Any], Path, SimulatedWorld]:
    return tiny_run.report, tiny_run.root, tiny_run.world


def test_report_has_every_section_with_controls_and_strong_attacks(
    happy: tuple[dict[str, Any], Path, SimulatedWorld],
) -> None:
    report, root, _ = happy
    for key in ("scenario", "dataset", "model", "clients", "seed", "training", "requests", "unlearning",
                "baselines", "artifacts", "evaluation"):
        assert key in report
    assert len(report["commit"]) == 40 and report["command"].startswith(Path(sys.argv[0]).name)  # where it came from
    assert set(report["training"]) >= {"rounds", "seconds", "ta"}
    assert set(report["unlearning"]) >= {"method", "rounds", "seconds", "bytes", "ta", "ua", "gate"}
    assert set(report["unlearning"]["gate"]) >= {"passed", "forget_auc", "tolerance", "ci", "attacks", "looks"}
    for attack in ("lira", "rmia"):
        assert set(report["unlearning"]["gate"]["attacks"][attack]) >= {"auc", "ci", "tpr_at_1pct_fpr", "tolerance"}
    for name in ("federated_retrain", "federated_finetune", "original"):
        assert set(report["baselines"][name]) >= {"seconds", "bytes", "ta", "ua", "forget_auc", "gate"}
    for name in ("original", "federated_retrain"):
        assert set(report["controls"][name]) >= {"passed", "reasons", "attacks"}
        assert {"loss", "lira", "rmia"} <= set(report["controls"][name]["attacks"])
    assert report["controls"]["evidence"] and report["references"]["models"] == 4
    unlearning = report["unlearning"]
    assert len(unlearning["round_seconds"]) == len(unlearning["round_kinds"]) == unlearning["rounds"]
    for kind, parts in zip(unlearning["round_kinds"], unlearning["round_seconds"], strict=True):
        # every part of a judged round took time (a repair round's FedAvg counts with the nodes' training)
        assert set(parts) == {"nodes", "shaping", "audit", "ta"}, parts
        assert min(parts["nodes"], parts["audit"], parts["ta"]) > 0 and (parts["shaping"] > 0) == (kind == "unlearn")
    assert sum(sum(parts.values()) for parts in unlearning["round_seconds"]) <= unlearning["seconds"]
    assert report["baselines"]["federated_retrain"]["rounds"] == 2  # as many rounds as the original had
    for path in (report["artifacts"]["model"], *report["artifacts"]["plots"].values()):
        assert (root / "run" / path).is_file()


def test_requests_are_committed_purged_and_receipted(happy: tuple[dict[str, Any], Path, SimulatedWorld]) -> None:
    report, _, world = happy
    assert report["unlearning"]["gate"]["passed"]
    assert {r["status"] for r in report["requests"]} == {"committed"}
    assert len(report["requests"]) == len(world.filed) == 2
    for filed in world.filed:
        node = world.node(filed.partition)
        assert node.ledger.get(filed.request_id).status is RequestStatus.COMMITTED
        assert not set(filed.forget_ids) & set(node.train().ids.tolist())
        receipt = json.loads(node.receipt_path(filed.request_id).read_text())
        assert receipt["model_hash_after"] == report["unlearning"]["model_hash"]
        assert receipt["num_samples"] == len(filed.forget_ids)
    assert report["evaluation"]["forget_ids"] == sorted(i for f in world.filed for i in f.forget_ids)


def _numbers_and_texts(content: RecordDict) -> tuple[list[float], list[str]]:
    numbers: list[float] = []
    texts: list[str] = []
    for record in (*content.config_records.values(), *content.metric_records.values()):
        for key, value in record.items():
            texts.append(key)
            for item in value if isinstance(value, list) else [value]:
                (texts if isinstance(item, str | bytes) else numbers).append(item)  # type: ignore[arg-type]
    return numbers, [t.decode() if isinstance(t, bytes) else t for t in texts]


def test_no_sample_id_reaches_the_server(tiny_run: TinyRun) -> None:
    world, grid = tiny_run.world, tiny_run.grid  # its sample ids are shifted beyond any count or size
    ids = {int(i) for i in world.bundle.train.ids}
    assert grid.received and world.filed
    for reply in grid.received:
        numbers, texts = _numbers_and_texts(reply.content)
        assert not {n for n in numbers if float(n).is_integer() and int(n) in ids}, reply.metadata.message_type
        assert not any(str(i) in text for text in texts for i in ids if len(text) >= 7)


@pytest.mark.slow
def test_a_requester_crashing_during_unlearning_keeps_its_request_pending(tmp_path: Path) -> None:
    world = _world(tmp_path)
    grid = in_process_grid(world, {100: failing(P.MSG_UNLEARN)})  # partition 0 always crashes while unlearning
    record = _run(world, grid)
    crashed, fine = world.filed[0], world.filed[1]
    assert world.node(0).ledger.get(crashed.request_id).status is RequestStatus.PENDING
    assert set(crashed.forget_ids) <= set(world.node(0).train().ids.tolist())  # nothing purged
    assert world.node(1).ledger.get(fine.request_id).status is RequestStatus.COMMITTED
    assert any("node 100" in f and "crashed" in f for f in record.failures)
    assert len(record.accuracy) == world.scenario.federation.rounds  # the run went on to the end


@pytest.mark.slow
@pytest.mark.parametrize(("corrupt", "why"), [(nan, "NaN or Inf"), (reshaped, "has shape")])
def test_bad_updates_are_rejected_and_reported(tmp_path: Path, corrupt: Callable[..., Any], why: str) -> None:
    world = _world(tmp_path, with_requests=False, rounds=2)
    grid = in_process_grid(world, {101: replacing_arrays(P.MSG_TRAIN, corrupt)})
    record = _run(world, grid)
    assert sum("node 101" in f and why in f for f in record.failures) == 2  # once per round
    assert all(bool(torch.isfinite(v).all()) for v in record.final_state.values() if v.is_floating_point())


@pytest.mark.slow
def test_a_requester_whose_training_half_is_corrupt_is_rejected_and_its_request_stays_pending(tmp_path: Path) -> None:
    world = _world(tmp_path)
    grid = in_process_grid(world, {100: replacing_arrays(P.MSG_UNLEARN, nan, P.TRAIN_ARRAYS)})
    record = _run(world, grid)
    assert any("node 100" in f and P.TRAIN_ARRAYS in f and "NaN or Inf" in f for f in record.failures)
    assert world.node(0).ledger.get(world.filed[0].request_id).status is RequestStatus.PENDING
    assert world.node(1).ledger.get(world.filed[1].request_id).status is RequestStatus.COMMITTED
    assert all(bool(torch.isfinite(v).all()) for v in record.final_state.values() if v.is_floating_point())


@pytest.mark.slow
def test_a_silent_node_is_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    world = _world(tmp_path, with_requests=False, rounds=2)
    grid = in_process_grid(world, {102: silent})
    record = _run(world, grid)
    assert any("node 102" in f and "no reply" in f for f in record.failures)
    assert len(record.accuracy) == 2


@pytest.mark.slow
def test_a_failing_gate_publishes_and_commits_nothing(tmp_path: Path) -> None:
    world = _world(tmp_path)
    grid = in_process_grid(world, {100: leaky_audit, 101: leaky_audit})
    record = _run(world, grid)
    phase = record.phases[0]
    assert not phase.passed and phase.model_hash is None and not phase.committed
    assert "attack AUC" in " ".join(phase.gate.reasons if phase.gate else ())
    for filed in world.filed:
        node = world.node(filed.partition)
        assert node.ledger.get(filed.request_id).status is RequestStatus.PENDING
        assert set(filed.forget_ids) <= set(node.train().ids.tolist())


def test_unknown_request_ids_from_the_server_change_nothing(tmp_path: Path) -> None:
    world = SimulatedWorld(tiny_scenario(), tmp_path / "nodes")
    paths = world.materialise()
    grid = InProcessGrid(create_client_app(), {100: paths[0]})
    message = Message(RecordDict({P.CONFIG: ConfigRecord({
        P.REQUEST_IDS: ["req-nope"], P.MODEL_HASH_BEFORE: "a", P.MODEL_HASH_AFTER: "b"})}),
        dst_node_id=100, message_type=P.MSG_COMMIT)
    [reply] = grid.send_and_receive([message])
    assert reply.has_error() and "req-nope" in reply.error.reason
    assert NodeDirectory.open(paths[0]).ledger.list() == []


@pytest.mark.slow
def test_a_requester_whose_audit_crashes_is_not_committed_and_the_audited_one_is(tmp_path: Path) -> None:
    world = _world(tmp_path)
    grid = in_process_grid(world, {100: failing(P.MSG_AUDIT)})
    record = _run(world, grid)
    crashed, audited = world.filed[0], world.filed[1]
    phase = record.phases[0]
    assert phase.gate_nodes == (101,)
    assert all(not p.gate_nodes for p in record.phases[1:])  # node 100 alone: nothing to pool, nothing passes
    assert world.node(0).ledger.get(crashed.request_id).status is RequestStatus.PENDING
    assert set(crashed.forget_ids) <= set(world.node(0).train().ids.tolist())
    if phase.passed:  # the audited requester alone decides; its request is committed
        assert world.node(1).ledger.get(audited.request_id).status is RequestStatus.COMMITTED
        receipt = json.loads(world.node(1).receipt_path(audited.request_id).read_text())
        assert receipt["audit"]["forget_size"] == len(audited.forget_ids)
    assert any("node 100" in f and "not pooled" in f for f in record.failures)


@pytest.mark.slow
def test_a_huge_finite_unlearning_update_is_bounded_and_cannot_wreck_the_model(tmp_path: Path) -> None:
    world = _world(tmp_path)
    grid = in_process_grid(world, {100: replacing_arrays(P.MSG_UNLEARN, huge)})
    record = _run(world, grid)
    phase = record.phases[0]
    scales = [w.update_scale for w in phase.client_work if w.partition == 0]
    assert scales and all(s < 1e-2 for s in scales)
    assert any("node 100's unlearning update" in f and "scaled down" in f for f in record.failures)
    assert record.final_ta > 80.0  # the bounded step did not destroy the global model


@pytest.mark.slow
def test_nan_in_a_requesters_unlearned_arrays_is_rejected_and_its_request_stays_pending(tmp_path: Path) -> None:
    world = _world(tmp_path)
    grid = in_process_grid(world, {100: replacing_arrays(P.MSG_UNLEARN, nan)})
    record = _run(world, grid)
    assert any("node 100" in f and "NaN or Inf" in f for f in record.failures)
    assert world.node(0).ledger.get(world.filed[0].request_id).status is RequestStatus.PENDING
    assert all(bool(torch.isfinite(v).all()) for v in record.final_state.values() if v.is_floating_point())


@pytest.mark.slow
def test_a_crash_during_commit_leaves_that_request_pending_and_unpublished_as_committed(tmp_path: Path) -> None:
    world = _world(tmp_path)
    grid = in_process_grid(world, {100: failing(P.MSG_COMMIT)})
    record = _run(world, grid)
    phase = next(p for p in record.phases if p.passed)
    crashed, fine = world.filed[0], world.filed[1]
    assert crashed.request_id not in phase.committed and fine.request_id in phase.committed
    assert world.node(0).ledger.get(crashed.request_id).status is RequestStatus.PENDING
    assert set(crashed.forget_ids) <= set(world.node(0).train().ids.tolist())  # nothing purged
    assert any("query.commit" in f and "node 100" in f for f in record.failures)
