"""Export for the edge inside an unlearning phase: forgetting must survive ONNX export and int8.

After the gate passes on the torch model, the server exports the unlearned
model (and, for comparison, the original and the federated-retrain models) to
fp32 ONNX and int8, and the requesting clients audit every artifact themselves
with ONNX Runtime on their pending forget sets (the server sends the bytes in
``evaluate.audit``). This must happen before ``query.commit``: the commit
purges the very samples the audit needs. Each unlearned artifact then faces
the same leakage gate as the torch model; its test-accuracy drop is the torch
model's (already gated) plus what export loses against it, measured with ONNX
Runtime on test images the int8 calibration did not see (measuring the whole
drop on that smaller set alone would fail an fp32 file identical to the torch
model on noise). One that fails is not published; the reasons go into the
report. What passes is published into the run's ``export/`` folder after the
commit, with a manifest that names the committed requests.

Static int8 is calibrated on part of the server's own test split (half of it
at most, ``CalibrationSource.TEST_SET``), never on client data: the server
holds nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedunlearn.common.audit.gate import GateResult
from fedunlearn.common.audit.signals import Logits, torch_logits
from fedunlearn.common.data.tensors import DatasetBundle, LabeledData
from fedunlearn.common.edge.inputs import PackageInputs, package_inputs
from fedunlearn.common.edge.manifest import set_audit
from fedunlearn.common.edge.package import dataset_manifest
from fedunlearn.common.edge.pipeline import ExportJob, Package, stage_package
from fedunlearn.common.edge.plan import CalibrationSource, ExportPlan
from fedunlearn.common.edge.runtime import Manifest
from fedunlearn.common.edge.scoring import onnx_logits
from fedunlearn.common.errors import FedUnlearnError
from fedunlearn.common.models import ModelSpec, model_with_weights
from fedunlearn.common.training import top1_accuracy
from fedunlearn.server.aggregate import State
from fedunlearn.server.federation import Federation

__all__ = ["ArtifactFigures", "EdgeContext", "EdgeRecord", "StagedExport", "export_unaudited", "stage_exports"]

EXPORTED_MODELS = ("unlearned", "original", "federated_retrain")  # the leakage table's rows


@dataclass(frozen=True)
class EdgeContext:
    """Where a run publishes its export, what it exports with, and the run's seed (which test images
    calibrate the int8 artifact)."""

    out_dir: Path
    bundle: DatasetBundle
    plan: ExportPlan
    seed: int


@dataclass(frozen=True)
class ArtifactFigures:
    """One artifact as the federation audited it; ta on the test images calibration did not see."""

    model: str  # "unlearned", "original", "federated_retrain"
    file: str
    precision: str
    sha256: str
    bytes: int
    ta: float
    forget_auc: float | None
    gate: GateResult | None  # unlearned artifacts only


@dataclass
class EdgeRecord:
    """The export step of one phase, for the report (``export`` section) and the manifest."""

    artifacts: list[ArtifactFigures] = field(default_factory=list)
    parity_max_abs_diff: float | None = None
    int8_top1_agreement: float | None = None
    torch_ta: dict[str, float] = field(default_factory=dict)  # model -> torch ta on the same test images
    published: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def figures(self, model: str, precision: str) -> ArtifactFigures | None:
        return next((a for a in self.artifacts if a.model == model and a.precision.startswith(precision)), None)


@dataclass
class StagedExport:
    """The unlearned model's audited artifacts, staged until the commit (None: its export failed)."""

    package: Package | None
    record: EdgeRecord

    def publish(self, committed: Sequence[str], unconfirmed: Sequence[str] = ()) -> None:
        """Move the artifacts that passed into the export folder, the manifest naming the committed requests
        (and those whose commit went unanswered)."""
        if self.package is None or not self.package.manifest.artifacts:
            return
        requests = [dict(r, status="committed" if r["request_id"] in committed
                         else "unconfirmed" if r["request_id"] in unconfirmed else "pending")
                    for r in self.package.document["requests"]]
        self.package.document = {**self.package.document, "requests": requests}
        self.package.publish()
        self.record.published = sorted(self.package.manifest.artifacts)


def _inputs(context: EdgeContext) -> PackageInputs:
    return package_inputs(context.bundle.test, plan=context.plan, seed=context.seed,
                          calibrate_on=CalibrationSource.TEST_SET)


def _job(context: EdgeContext, spec: ModelSpec, state: State, inputs: PackageInputs,
         requests: Sequence[Mapping[str, Any]], checkpoint: str) -> ExportJob:
    description = dataset_manifest(spec, context.bundle, state, source_checkpoint=checkpoint, requests=requests)
    return ExportJob(model_with_weights(spec, state), spec, description, inputs, context.plan.int8, context.out_dir)


def _measured(inputs: PackageInputs) -> LabeledData:
    if inputs.measured is None:  # package_inputs always measures on test images
        raise FedUnlearnError("the edge export has no test images to measure its artifacts on")
    return inputs.measured


def export_unaudited(context: EdgeContext, spec: ModelSpec, state: State) -> EdgeRecord:
    """The run's final model when no unlearning phase published one (no request, or none passed):
    nothing to audit it on, and its manifest honours no request."""
    inputs = _inputs(context)
    evaluation = _measured(inputs)
    record = EdgeRecord()
    with stage_package(_job(context, spec, state, inputs, (), "../model.pt")) as built:
        _note_parity(built.manifest, record)
        record.reasons.extend([] if built.verdict is None else [f"final model: {built.verdict}"])
        for file, entry in built.manifest.artifacts.items():
            ta = top1_accuracy(onnx_logits((built.folder / file).read_bytes())(evaluation.x), evaluation.y)
            record.artifacts.append(ArtifactFigures("final", file, entry["precision"], entry["sha256"],
                                                    entry["bytes"], ta, None, None))
        record.torch_ta["final"] = top1_accuracy(_torch_logits(spec, state)(evaluation.x), evaluation.y)
        built.publish()
        record.published = sorted(built.manifest.artifacts)
    return record


@contextmanager
def stage_exports(fed: Federation, context: EdgeContext, spec: ModelSpec, states: Mapping[str, State],
                  requesters: Mapping[int, Sequence[str]], requests: Sequence[Mapping[str, Any]],
                  forgotten_classes: tuple[int, ...], torch_gate: GateResult) -> Iterator[StagedExport]:
    """Export and audit every model of the leakage table; yields the unlearned artifacts, staged and
    gated, for ``publish`` after the commit (the manifest's top-level audit is the torch model's gate).
    The staging folders are removed on exit."""
    inputs = _inputs(context)
    scored = _measured(inputs).where_classes(forgotten_classes, keep=False)
    staged = StagedExport(None, EdgeRecord())
    record = staged.record
    with ExitStack() as stack:
        for name in EXPORTED_MODELS:
            if name not in states:
                continue
            job = _job(context, spec, states[name], inputs, requests, "../models/unlearned.pt")
            try:
                built = stack.enter_context(stage_package(job))
            except FedUnlearnError as err:
                record.reasons.append(f"{name}: export failed ({err})")
                continue
            if built.verdict is not None:
                record.reasons.append(f"{name}: {built.verdict}")
            record.torch_ta[name] = top1_accuracy(_torch_logits(spec, states[name])(scored.x), scored.y)
            if name == "unlearned":
                _note_parity(built.manifest, record)
            _audit_artifacts(fed, built, name, requesters, scored, torch_gate.test_drop + record.torch_ta[name],
                             record)
            if name == "unlearned":
                built.document = set_audit(built.document, {**_audit_summary(torch_gate, None),
                                                            "audited_by": "requesting clients, torch"})
                staged.package = built
        yield staged


def _audit_artifacts(fed: Federation, built: Package, name: str, requesters: Mapping[int, Sequence[str]],
                     scored: LabeledData, reference_ta: float, record: EdgeRecord) -> None:
    """Each artifact audited by the requesters; an unlearned one that fails the gate is dropped.
    reference_ta - artifact ta (on ``scored``) is the drop the gate judges (module docstring)."""
    for file, entry in built.manifest.artifacts.items():
        data = (built.folder / file).read_bytes()
        audits = fed.audit_artifact(data, requesters, f"{name}-{entry['precision']}")
        ta = top1_accuracy(onnx_logits(data, expected_sha256=entry["sha256"])(scored.x), scored.y)
        judged = fed.judge(audits, reference_ta - ta)
        gate = None
        if name == "unlearned":
            gate = judged
            if gate is None or not gate.passed:
                why = "no audit came back" if gate is None else "; ".join(gate.reasons)
                record.reasons.append(f"{file} ({entry['precision']}) is not published: {why}")
                built.drop(file)
            else:
                built.document = set_audit(built.document, _audit_summary(gate, ta), artifact=file)
        record.artifacts.append(ArtifactFigures(
            model=name, file=file, precision=entry["precision"], sha256=entry["sha256"], bytes=entry["bytes"],
            ta=ta, forget_auc=None if judged is None else judged.forget_auc, gate=gate))


def _audit_summary(gate: GateResult, ta: float | None) -> dict[str, Any]:
    return {"passed": gate.passed, "attack": gate.attack, "forget_auc": gate.forget_auc,
            "ci": None if gate.ci is None else list(gate.ci), "tolerance": gate.tolerance,
            "forget_accuracy": gate.forget_accuracy, "reference_accuracy": gate.holdout_accuracy,
            "test_drop": gate.test_drop, "ta": ta, "audited_by": "requesting clients, ONNX Runtime"}


def _note_parity(manifest: Manifest, record: EdgeRecord) -> None:
    for entry in manifest.artifacts.values():
        parity = entry["parity"]
        if entry["precision"] == "fp32":
            record.parity_max_abs_diff = float(parity["max_abs_diff"])
        else:
            record.int8_top1_agreement = float(parity["top1_agreement"])


def _torch_logits(spec: ModelSpec, state: State) -> Logits:
    return torch_logits(model_with_weights(spec, state), device=torch.device("cpu"))
