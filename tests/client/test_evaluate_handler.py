"""The node's plain ``evaluate`` handler, which Flower's own strategies send: the global model's accuracy and
loss on this node's hold-out, computed on the node and sent as numbers only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from flwr.app import ConfigRecord, RecordDict

from fedunlearn.client import handlers
from fedunlearn.client.session import NodeSession
from fedunlearn.common import protocol as P
from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.errors import ModelError
from fedunlearn.common.models import ModelSpec, build_model
from fedunlearn.common.nodes import NodeLayout, materialise_node
from fedunlearn.common.records import state_arrays
from tests.messages import to_node


def test_evaluate_reports_the_sent_models_accuracy_and_loss_on_the_holdout(tmp_path: Path) -> None:
    node = materialise_node(tmp_path / "node", load_dataset("digits"), NodeLayout(dataset="digits", partition=1,
                                                                                   num_partitions=3))
    model = build_model(ModelSpec("mlp", 1, 8, 10), seed=3).eval()
    session = NodeSession(node, ConfigRecord({P.MODEL: "mlp"}))
    sent = to_node(RecordDict({P.ARRAYS: state_arrays(model.state_dict())}), P.MSG_EVALUATE)
    metrics = handlers.evaluate(session, sent).metric_records[P.METRICS]

    holdout = node.holdout()
    with torch.no_grad():
        logits = model(holdout.x)
    assert metrics[P.NUM_EXAMPLES] == len(holdout) > 0
    assert metrics[P.HOLDOUT_ACCURACY] == pytest.approx(100.0 * float((logits.argmax(1) == holdout.y).float().mean()))
    assert metrics[P.HOLDOUT_LOSS] == pytest.approx(float(F.cross_entropy(logits, holdout.y)), rel=1e-5)
    with pytest.raises(ModelError, match="no model arrays"):
        handlers.evaluate(session, to_node(RecordDict(), P.MSG_EVALUATE))
