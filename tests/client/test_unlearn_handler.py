"""The node's train.unlearn handler: the method's model, and the node's ordinary training of the same model
unless the server says the round has none ([unlearning].train_beside)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, RecordDict

from fedunlearn.client import handlers
from fedunlearn.client.session import NodeSession
from fedunlearn.common import protocol as P
from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.models import ModelSpec, build_model
from fedunlearn.common.nodes import NodeLayout, materialise_node
from fedunlearn.common.records import state_arrays
from fedunlearn.common.training import TrainConfig
from tests.messages import to_node


@pytest.mark.parametrize("train_beside", [None, True, False])
def test_the_training_half_comes_back_unless_the_round_has_no_training(tmp_path: Path,
                                                                        train_beside: bool | None) -> None:
    node = materialise_node(tmp_path / "node", load_dataset("digits"), NodeLayout(dataset="digits", partition=0,
                                                                                   num_partitions=3))
    request = node.submit(ids=node.train().ids[:20].tolist(), reason="erasure")
    config = {P.MODEL: "mlp", P.SEED: 1, P.RECIPE: json.dumps(asdict(TrainConfig(epochs=1, batch_size=64))),
              P.REQUEST_IDS: [request.request_id], P.METHOD: "remi", P.METHOD_PARAMS: json.dumps({"max_steps": 20})}
    if train_beside is not None:  # absent: an older server, whose rounds always train
        config[P.TRAIN_BESIDE] = train_beside
    global_model = build_model(ModelSpec("mlp", 1, 8, 10), seed=3)
    sent = to_node(RecordDict({P.ARRAYS: state_arrays(global_model.state_dict())}), P.MSG_UNLEARN)

    reply = handlers.unlearn(NodeSession(node, ConfigRecord(config)), sent)

    assert P.ARRAYS in reply.array_records
    assert (P.TRAIN_ARRAYS in reply.array_records) is (train_beside is not False)
    assert reply.metric_records[P.METRICS][P.FORGET_SIZE] == 20
