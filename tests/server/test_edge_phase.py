"""The federation's edge export: artifacts audited by the requesting clients before the commit, and
only what passes the leakage gate published.

The export of a passing phase is read from the session's one federation (``tiny_run`` in conftest.py);
the runs with a leaking int8 audit and without requests are federations of their own, marked slow."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Message

from fedunlearn.common import protocol as P
from fedunlearn.common.edge.runtime import EdgeModel
from fedunlearn.common.world import SimulatedWorld
from fedunlearn.server.app import run
from tests.server.faults import leaky_audit
from tests.server.in_process import InProcessGrid, TinyRun, in_process_grid, tiny_scenario

Exported = tuple[dict[str, Any], Path, SimulatedWorld, InProcessGrid]


def _run(root: Path, faults: dict[int, Callable[..., Message | None]] | None = None) -> Exported:
    """A federation of its own, without baselines: their artifacts are audited like the others, on
    ``tiny_run``, and what is published depends on the unlearned model's alone."""
    world = SimulatedWorld(tiny_scenario(baselines=False), root / "nodes")
    grid = in_process_grid(world, faults)
    run(grid, world.scenario, {}, root / "run", world=world)  # type: ignore[arg-type]
    return json.loads((root / "run" / "report.json").read_text()), root / "run", world, grid


@pytest.fixture
def exported(tiny_run: TinyRun) -> Exported:
    return tiny_run.report, tiny_run.root / "run", tiny_run.world, tiny_run.grid


def test_the_report_has_the_export_section(exported: Exported) -> None:
    report, run_dir, _, _ = exported
    export = report["export"]
    assert export["model"] == "unlearned" and export["published"] == ["model.int8.onnx", "model.onnx"]
    assert export["parity_max_abs_diff"] <= 1e-4
    assert 0.9 <= export["int8_top1_agreement"] <= 1.0
    for key in ("int8_ta", "fp32_ta", "fp32_forget_auc", "int8_forget_auc"):
        assert isinstance(export[key], float), key
    # the leakage table: each model as torch, fp32 ONNX and int8 ONNX, all audited by the clients
    assert set(export["leakage"]) == {"unlearned", "original", "federated_retrain"}
    for row in export["leakage"].values():
        assert all(0.0 <= row[k] <= 1.0 for k in ("torch", "fp32", "int8"))
    assert export["leakage"]["unlearned"]["torch"] == report["unlearning"]["forget_auc"]
    assert (run_dir / "report.md").read_text().count("| federated_retrain |") == 2  # models table + leakage table


def _artifact_audits(grid: InProcessGrid) -> list[tuple[int, str]]:
    """(position in the message log, sha256) of every audit that carried an ONNX model."""
    found = []
    for position, message in enumerate(grid.sent):
        config = message.content.config_records.get(P.CONFIG)
        if message.metadata.message_type == P.MSG_AUDIT and config is not None and P.ARTIFACT in config:
            data = config[P.ARTIFACT]
            assert isinstance(data, bytes) and hashlib.sha256(data).hexdigest() == config[P.ARTIFACT_SHA256]
            found.append((position, str(config[P.ARTIFACT_SHA256])))
    return found


def test_the_requesters_audit_every_artifact_before_the_commit(exported: Exported) -> None:
    report, run_dir, world, grid = exported
    audits = _artifact_audits(grid)
    first_commit = min(i for i, m in enumerate(grid.sent) if m.metadata.message_type == P.MSG_COMMIT)
    assert audits and all(position < first_commit for position, _ in audits)
    audited = {sha for _, sha in audits}
    assert {a["sha256"] for a in report["export"]["artifacts"]} == audited  # 3 models x fp32 + int8
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert {entry["sha256"] for entry in manifest["artifacts"].values()} <= audited
    requesters = {100 + f.partition for f in world.filed}
    assert {m.metadata.dst_node_id for m in grid.sent if m.metadata.message_type == P.MSG_AUDIT} == requesters


def test_the_published_manifest_verifies_and_names_the_committed_requests(exported: Exported) -> None:
    report, run_dir, world, _ = exported
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["parent_model_sha256"] == report["unlearning"]["model_hash"]
    assert manifest["audit"]["passed"] and manifest["audit"]["forget_auc"] == report["unlearning"]["gate"]["forget_auc"]
    assert [(r["request_id"], r["status"]) for r in manifest["requests"]] == [
        (r["request_id"], "committed") for r in report["requests"]]
    assert all(set(r) == {"request_id", "kind", "num_samples", "status"} for r in manifest["requests"])
    # the fp32 file computes what the torch model computes: it is judged on the drop the torch model was
    # (what export loses comes on top, measured on the test images calibration did not see)
    assert manifest["artifacts"]["model.onnx"]["audit"]["test_drop"] == pytest.approx(
        report["unlearning"]["gate"]["test_drop"], abs=1e-6)
    for name, entry in manifest["artifacts"].items():
        assert entry["audit"]["passed"] and entry["audit"]["audited_by"].startswith("requesting clients")
        model = EdgeModel.open(run_dir / "export" / name)  # checks the sha256 against the manifest
        assert list(model.class_names) == manifest["class_names"]
    forget_ids = {i for f in world.filed for i in f.forget_ids}
    sizes = ("calibration_samples", "num_samples", "bytes")  # counts, which may equal an id by chance
    text = "\n".join(line for line in (run_dir / "export" / "manifest.json").read_text().splitlines()
                     if not line.strip().startswith(tuple(f'"{key}"' for key in sizes)))
    assert not any(f'"{i}"' in text or f" {i}," in text for i in forget_ids if i >= 100)


def _leaky_int8_audit(message: Message, honest: Callable[[], Message]) -> Message | None:
    """Audits of a (static, QDQ) int8 model come back as if it still remembered the forget set."""
    config = message.content.config_records.get(P.CONFIG)
    data = None if config is None else config.get(P.ARTIFACT)
    if isinstance(data, bytes) and b"QuantizeLinear" in data:
        return leaky_audit(message, honest)
    return honest()


@pytest.mark.slow
def test_an_int8_artifact_that_fails_the_gate_is_not_published(tmp_path: Path) -> None:
    report, run_dir, _, _ = _run(tmp_path, {100: _leaky_int8_audit, 101: _leaky_int8_audit})
    export = report["export"]
    assert export["published"] == ["model.onnx"]
    assert any("model.int8.onnx" in reason and "not published" in reason for reason in export["reasons"])
    assert not (run_dir / "export" / "model.int8.onnx").exists()
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert list(manifest["artifacts"]) == ["model.onnx"]
    assert {r["status"] for r in report["requests"]} == {"committed"}  # the torch model passed its gate


@pytest.mark.slow
def test_a_run_without_requests_exports_its_final_model_unaudited(tmp_path: Path) -> None:
    world = SimulatedWorld(tiny_scenario(with_requests=False, rounds=2), tmp_path / "nodes")
    run(in_process_grid(world), world.scenario, {}, tmp_path / "run", world=world)  # type: ignore[arg-type]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    export = report["export"]
    assert export["model"] == "final" and export["published"] == ["model.int8.onnx", "model.onnx"]
    assert export["fp32_forget_auc"] is None and "leakage" not in export  # nothing to audit it on
    manifest = json.loads((tmp_path / "run" / "export" / "manifest.json").read_text())
    assert manifest["requests"] == [] and manifest["audit"] == {}
    assert manifest["source_checkpoint"] == "../model.pt"
    assert abs(export["fp32_ta"] - export["torch_ta"]) < 0.5
