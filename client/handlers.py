"""The work behind each message type: decode, call common/, encode the reply content.

Each function takes the handler's ``NodeSession`` (and the message where it
carries the model) and returns the reply's RecordDict. Nothing returned names
a sample: counts, request ids and aggregate numbers only.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.typing import MetricRecordValues

from fedunlearn.client.calibration import CalibrationTable, drop_samples
from fedunlearn.client.session import NodeSession
from fedunlearn.common import protocol as P
from fedunlearn.common.audit.calibrated import Calibration
from fedunlearn.common.audit.exemplars import Exemplars, exemplars_from_record
from fedunlearn.common.audit.local import comparison_sets, local_leakage_audit
from fedunlearn.common.audit.signals import Logits, torch_logits
from fedunlearn.common.checkpoint import states_sha256
from fedunlearn.common.data.splits import holdout_roles
from fedunlearn.common.data.tensors import LabeledData, concat
from fedunlearn.common.edge.scoring import onnx_logits
from fedunlearn.common.errors import RequestError
from fedunlearn.common.models import Classifier, ModelSpec
from fedunlearn.common.nodes import ForgetRequest, NodeDirectory, RequestStatus
from fedunlearn.common.records import state_arrays
from fedunlearn.common.training import predict_logits, top1_accuracy, train
from fedunlearn.common.unlearning import UnlearningTask, parse_params, run_method
from fedunlearn.common.unlearning.base import Granularity
from fedunlearn.common.unlearning.reference import build_reference, build_utility

__all__ = ["audit", "calibrate", "commit", "defer", "evaluate", "status", "train_round", "unlearn"]


def status(session: NodeSession) -> RecordDict:
    node = session.node
    pending = node.ledger.pending()
    return RecordDict({P.STATUS: ConfigRecord({
        P.PARTITION: int(node.layout.partition),
        P.LAYOUT: json.dumps(asdict(node.layout), sort_keys=True),
        P.NUM_TRAIN: len(node.retain()),
        P.NUM_HOLDOUT: len(node.holdout()),
        P.PENDING_REQUESTS: [r.request_id for r in pending],
        P.PENDING_KINDS: [str(r.kind) for r in pending],
        P.PENDING_SAMPLES: sum(len(r.sample_ids) for r in pending),
        P.PENDING_COUNTS: [len(r.sample_ids) for r in pending],
        P.PENDING_CLASSES: [P.NO_CLASS if r.target_class is None else int(r.target_class) for r in pending],
    })})


def _trained(session: NodeSession, message: Message, retain: LabeledData) -> Classifier:
    model = session.model(message)
    train(model, retain, session.recipe(), device=session.device,
          generator=torch.Generator().manual_seed(session.seed))
    return model


def train_round(session: NodeSession, message: Message) -> RecordDict:
    """Local epochs on retain data only: samples under any request are already excluded."""
    retain = session.node.retain()
    started = time.perf_counter()
    model = _trained(session, message, retain)
    return RecordDict({
        P.ARRAYS: state_arrays(model.state_dict()),
        P.METRICS: MetricRecord({P.NUM_EXAMPLES: len(retain), P.SECONDS: time.perf_counter() - started}),
    })


def _pending(node: NodeDirectory, request_ids: list[str]) -> list[ForgetRequest]:
    if not request_ids:
        raise RequestError("the server named no requests")
    requests = [node.ledger.get(r) for r in request_ids]
    for request in requests:
        if request.status is not RequestStatus.PENDING:
            raise RequestError(f"request {request.request_id} is {request.status.value}, not pending")
    return requests


def _granularity(requests: list[ForgetRequest]) -> tuple[Granularity, tuple[int, ...]]:
    """Class forgetting when every request names a class; otherwise sample-level (a leaving
    node's 'all' request is sample forgetting of everything it holds)."""
    if all(r.kind == "class" for r in requests):
        return "class", tuple(sorted({int(r.target_class) for r in requests if r.target_class is not None}))
    return "sample", ()


def unlearn(session: NodeSession, message: Message) -> RecordDict:
    """The method on the pending forget set, and (with retain data, unless the server says the round has
    no training) an ordinary training of the same model: the server applies the unlearning step on top of
    everyone's FedAvg training."""
    node = session.node
    requests = _pending(node, session.request_ids)
    granularity, classes = _granularity(requests)
    forget = node.forget_set(requests)
    holdout = _like(node, forget, holdout_roles(node.holdout()).method)  # the sealed half is the gate's alone
    model = session.model(message)
    shape = node.meta["input_shape"]
    task = UnlearningTask(
        original=model,
        spec=ModelSpec(str(session.config[P.MODEL]), int(shape[0]), int(shape[1]), node.num_classes),
        retain=node.retain(), forget=forget,
        reference=build_reference(holdout, granularity, classes, seed=session.seed),
        recipe=session.recipe(), granularity=granularity, device=session.device, seed=session.seed,
        utility=build_utility(holdout, granularity, classes),
        expected_confidence=_expected(session, forget, holdout) if granularity == "sample" else None,
    )
    method = str(session.config.get(P.METHOD, "remi"))
    params = parse_params(method, json.loads(str(session.config.get(P.METHOD_PARAMS, "{}"))))
    result = run_method(method, task, params)
    reply = RecordDict({
        P.ARRAYS: state_arrays(result.model.state_dict()),
        P.METRICS: MetricRecord({
            P.NUM_EXAMPLES: len(task.retain), P.FORGET_SIZE: len(task.forget),
            P.STEPS: int(result.steps), P.SECONDS: float(result.seconds),
        }),
    })
    if len(task.retain) > 0 and session.config.get(P.TRAIN_BESIDE, True):  # its part of the round's FedAvg
        reply[P.TRAIN_ARRAYS] = state_arrays(_trained(session, message, task.retain).state_dict())
    return reply


def evaluate(session: NodeSession, message: Message) -> RecordDict:
    """Accuracy and loss of the global model on this node's hold-out."""
    holdout = session.node.holdout()
    logits = predict_logits(session.model(message), holdout.x, device=session.device)
    return RecordDict({P.METRICS: MetricRecord({
        P.NUM_EXAMPLES: len(holdout),
        P.HOLDOUT_ACCURACY: top1_accuracy(logits, holdout.y),
        P.HOLDOUT_LOSS: float(F.cross_entropy(logits.float(), holdout.y)),
    })})


def _audited_model(session: NodeSession, message: Message) -> Logits:
    """The global model's arrays, or an exported ONNX artifact run by ONNX Runtime, as the server sent it."""
    artifact = session.config.get(P.ARTIFACT)
    if artifact is None:
        return torch_logits(session.model(message), device=session.device)
    if not isinstance(artifact, bytes):
        raise RequestError(f"the server's {P.ARTIFACT} is not ONNX model bytes")
    return onnx_logits(artifact, expected_sha256=str(session.config.get(P.ARTIFACT_SHA256, "")))


def _like(node: NodeDirectory, forget: LabeledData, holdout: LabeledData) -> LabeledData:
    """The hold-out samples a retrained model would treat like the forget set: those sharing its tags
    (mislabeled samples are compared with hold-out samples mislabeled the same way, not with clean ones,
    which even a retrained model tells apart); the whole part when the forget set carries no tag."""
    tags = node.tags_of(forget.ids.tolist())
    if not tags:
        return holdout
    ids = set.intersection(*(node.tagged(tag) for tag in tags))
    return holdout.where_ids(torch.tensor(sorted(ids), dtype=torch.int64), keep=True)


def _expected(session: NodeSession, forget: LabeledData, holdout: LabeledData) -> dict[int, float] | None:
    """What the audit's references expect of the forget set and ReMI's half of the hold-out, when the server
    named them (class forgetting relabels its reference set, which the stored statistics do not cover)."""
    digest = session.config.get(P.CALIBRATION)
    if digest is None:
        return None
    table = CalibrationTable.load(session.node.path, str(digest))
    return table.expected(forget) | table.expected(holdout)


def calibrate(session: NodeSession, message: Message) -> RecordDict:
    """Keep the server's reference models' statistics on every local sample (``client.calibration``)."""
    names = sorted((n for n in message.content.array_records if n.startswith(P.REFERENCE_PREFIX)),
                   key=lambda n: int(n[len(P.REFERENCE_PREFIX):]))
    if not names:
        raise RequestError("the server sent no reference models to calibrate with")
    references = [session.model(message, arrays=name) for name in names]
    digest = states_sha256([m.state_dict() for m in references])
    node = session.node
    table = CalibrationTable.compute(references, concat(node.train(), node.holdout()), device=session.device)
    table.save(node.path, digest)
    return RecordDict({P.STATUS: ConfigRecord({P.CALIBRATION: digest}),
                       P.METRICS: MetricRecord({P.NUM_CALIBRATED: len(table.ids)})})


def audit(session: NodeSession, message: Message) -> RecordDict:
    """Membership audit of the model (torch arrays or an ONNX artifact) on this node's pending forget
    set against its sealed hold-out, as a model retrained without it would see them
    (``common.audit.local.comparison_sets``), and against the test images the server lent
    (``common.audit.exemplars``); with reference-model attacks when the server names a calibration."""
    node = session.node
    requests = _pending(node, session.request_ids)
    granularity, classes = _granularity(requests)
    forget = node.forget_set(requests)
    sealed = _like(node, forget, holdout_roles(node.holdout()).audit)
    sets = comparison_sets(sealed, granularity, classes, seed=session.seed)
    lent = _lent(session, message, classes, forget)
    nonmembers = sets.nonmembers if lent is None else concat(sets.nonmembers, lent.data)
    if len(nonmembers) == 0:  # e.g. a node holding a class only in its training part, and nothing lent
        return RecordDict({P.METRICS: MetricRecord({P.FORGET_SIZE: len(forget), P.HOLDOUT_SIZE: 0})})
    digest = session.config.get(P.CALIBRATION)
    calibration = None
    if digest is not None:
        table = CalibrationTable.load(node.path, str(digest))
        calibration = (table.calibration(forget), _joined(table.calibration(sets.nonmembers), lent))
    result = local_leakage_audit(_audited_model(session, message), forget, nonmembers,
                                 accuracy_reference=sets.accuracy_reference, calibration=calibration)
    metrics: dict[str, MetricRecordValues] = {
        P.FORGET_SIZE: result.forget_size, P.HOLDOUT_SIZE: result.holdout_size,
        P.FORGET_ACCURACY: result.forget_accuracy, P.HOLDOUT_ACCURACY: result.holdout_accuracy,
    }
    for name, figures in result.attacks.items():
        metrics[P.AUC_PREFIX + name] = figures.auc
        metrics[P.TPR_PREFIX + name] = figures.tpr_at_1pct_fpr
    return RecordDict({P.METRICS: MetricRecord(metrics)})


def _lent(session: NodeSession, message: Message, classes: tuple[int, ...], forget: LabeledData) -> Exemplars | None:
    """The server's test images this audit may use, when it lent any: a class audit's of the forgotten
    classes, a sample audit's in its forget set's class mix. Mislabeled forget samples are like none of them."""
    record = message.content.array_records.get(P.EXEMPLARS)
    if record is None:
        return None
    lent = exemplars_from_record(record, input_shape=tuple(session.node.meta["input_shape"]),
                                 num_classes=session.node.num_classes)
    if classes:
        return lent.of_classes(classes)
    if session.node.tags_of(forget.ids.tolist()):
        raise RequestError("the server lent test images to the audit of a tagged (e.g. mislabeled) forget set, "
                           "which only hold-out samples tagged the same way are like")
    return lent.like(forget.y)


def _joined(own: Calibration, lent: Exemplars | None) -> Calibration:
    """The references' statistics on this node's non-members, then on the lent exemplars."""
    if lent is None:
        return own
    theirs = lent.calibration()
    if theirs.statistic.shape[0] != own.statistic.shape[0]:
        raise RequestError(f"the lent exemplars carry {theirs.statistic.shape[0]} references' statistics, "
                           f"this node's calibration {own.statistic.shape[0]}")
    return Calibration.offline(np.concatenate([own.statistic, theirs.statistic], axis=1))


def commit(session: NodeSession) -> RecordDict:
    """Mark the requests committed with their receipts and purge their samples.

    Idempotent: a request this node already committed under the same published model answers as
    committed and changes nothing, so a server whose commit reply was lost can ask again."""
    if not session.request_ids:
        raise RequestError("the server named no requests")
    after = str(session.config[P.MODEL_HASH_AFTER])
    named = [session.node.ledger.get(r) for r in session.request_ids]
    if fresh := [r.request_id for r in named if not _committed_under(r, after)]:
        requests = _pending(session.node, fresh)
        receipt = {
            "model_hash_before": str(session.config[P.MODEL_HASH_BEFORE]),
            "model_hash_after": after,
            "audit": json.loads(str(session.config.get(P.AUDIT_SUMMARY, "{}"))),
        }
        session.node.commit([r.request_id for r in requests], receipt)
    # again on a repeat too: a node that crashed after its ledger commit may not have got this far
    drop_samples(session.node.path, {i for r in named for i in r.sample_ids})
    return RecordDict({P.STATUS: ConfigRecord({P.COMMITTED: list(session.request_ids)})})


def defer(session: NodeSession) -> RecordDict:
    """Note in the ledger why the server's phase left these requests pending (settled ones are skipped)."""
    noted = session.node.ledger.defer(session.request_ids, str(session.config.get(P.DEFERRAL, "")))
    return RecordDict({P.STATUS: ConfigRecord({P.DEFERRED: noted})})


def _committed_under(request: ForgetRequest, model_hash: str) -> bool:
    return request.status is RequestStatus.COMMITTED and (request.receipt or {}).get("model_hash_after") == model_hash
