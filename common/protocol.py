"""The wire: every message type, record key and metric key the ClientApp and ServerApp share.

Plain constants so that client/ and server/ (and tests) import one spelling;
nothing here imports Flower. Sample ids never appear in any of these records:
the server learns counts, request ids and aggregate numbers only.
"""

from __future__ import annotations

# message types: "<train|evaluate|query>.<action>"; handlers register by action name
ACTION_UNLEARN = "unlearn"
ACTION_AUDIT = "audit"
ACTION_STATUS = "status"
ACTION_COMMIT = "commit"
ACTION_CALIBRATE = "calibrate"
ACTION_DEFER = "defer"
MSG_TRAIN = "train"
MSG_UNLEARN = f"train.{ACTION_UNLEARN}"
MSG_EVALUATE = "evaluate"
MSG_AUDIT = f"evaluate.{ACTION_AUDIT}"
MSG_CALIBRATE = f"evaluate.{ACTION_CALIBRATE}"  # reference models in; their statistics on local data kept
MSG_STATUS = f"query.{ACTION_STATUS}"
MSG_COMMIT = f"query.{ACTION_COMMIT}"
MSG_DEFER = f"query.{ACTION_DEFER}"  # requests a phase left pending, and why: noted in the node's ledger

# record names inside a message's RecordDict
ARRAYS = "arrays"  # ArrayRecord: the model's state dict
TRAIN_ARRAYS = "arrays.train"  # ArrayRecord: a requester's retain-data training of the same model (train.unlearn)
CONFIG = "config"  # ConfigRecord: instructions from the server
METRICS = "metrics"  # MetricRecord: numbers back to the server
STATUS = "status"  # ConfigRecord: a node's answer to query.status
REFERENCE_PREFIX = "reference-"  # + index: ArrayRecords of the audit's reference models (evaluate.calibrate)
EXEMPLARS = "exemplars"  # ArrayRecord: the server's test images of the forgotten classes (evaluate.audit)

# node config key (SuperNode --node-config) and run config keys ([tool.flwr.app.config])
NODE_DIR = "node-dir"
RUN_SCENARIO = "scenario"
RUN_DIR = "run-dir"
RUN_NODES_ROOT = "nodes-root"
RUN_CLIENTS = "clients"
RUN_ROUNDS = "rounds"
RUN_DEVICE = "device"
# what each run config key says when it leaves the scenario as it is: named values, not 0 or ""
RUN_KEEP = {RUN_CLIENTS: "auto", RUN_ROUNDS: "scenario", RUN_DEVICE: "scenario", RUN_NODES_ROOT: "none"}

# config keys (server -> client)
ROUND = "round"
SEED = "seed"
MODEL = "model"  # model architecture name (common.models.MODELS)
RECIPE = "recipe"  # JSON object: the TrainConfig of local training (epochs = local epochs)
METHOD = "method"
METHOD_PARAMS = "method-params"  # JSON object of hyper-parameter overrides
ARTIFACT = "artifact"  # bytes: an exported ONNX model to audit instead of the arrays (evaluate.audit)
ARTIFACT_SHA256 = "artifact-sha256"  # its sha256, checked by the node before ONNX Runtime loads it
REQUEST_IDS = "request-ids"
TRAIN_BESIDE = "train-beside"  # bool: a requester also trains on its retain data (train.unlearn; absent: true)
MODEL_HASH_BEFORE = "model-hash-before"
MODEL_HASH_AFTER = "model-hash-after"
DEFERRAL = "deferral"  # why the named requests stay pending (query.defer)
AUDIT_SUMMARY = "audit-summary"  # JSON object: the gate's figures, copied into receipts
CALIBRATION = "calibration"  # digest of the reference models whose statistics the audit uses (both ways)
DEVICE = "device"

# status keys (client -> server)
PARTITION = "partition"
LAYOUT = "layout"  # JSON object: how the node's data was cut from the dataset (NodeLayout, no sample ids)
NUM_TRAIN = "num-train"  # retain samples: those any training may use
NUM_HOLDOUT = "num-holdout"
PENDING_REQUESTS = "pending-requests"  # list of request ids
PENDING_KINDS = "pending-kinds"  # list of request kinds, same order
PENDING_SAMPLES = "pending-samples"
PENDING_COUNTS = "pending-counts"  # samples under each pending request, same order
PENDING_CLASSES = "pending-classes"  # per pending request, in order: its target class, or NO_CLASS
NO_CLASS = -1  # in PENDING_CLASSES: a request that names no class (ids, a sample share, a leaving node)
COMMITTED = "committed"  # list of request ids committed by query.commit
DEFERRED = "deferred"  # list of request ids noted by query.defer

# metric keys (client -> server)
NUM_EXAMPLES = "num-examples"  # FedAvg weight
SECONDS = "seconds"
STEPS = "steps"
FORGET_SIZE = "forget-size"
HOLDOUT_SIZE = "holdout-size"
FORGET_ACCURACY = "forget-accuracy"
HOLDOUT_ACCURACY = "holdout-accuracy"
HOLDOUT_LOSS = "holdout-loss"
NUM_CALIBRATED = "num-calibrated"  # samples whose reference statistics a node keeps
AUC_PREFIX = "auc-"  # + attack name
TPR_PREFIX = "tpr1-"  # + attack name: TPR at 1% FPR, percent


# reading values off the wire: a ConfigRecord or MetricRecord value may be any of Flower's types,
# whatever the key promises


def whole_number(value: object) -> int:
    """A count or index as sent: a whole number (int() would quietly turn 40.7 into 40 and let it agree)."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
        raise ValueError(f"expected a whole number, got {str(value)[:40]}")
    return int(value)


def listed(value: object) -> list[object]:
    """A value that must be a list (a scalar there is malformed, not a list of one)."""
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return list(value)
