"""What every ClientApp handler needs first: this node's directory, its model, its device.

The node directory comes from the SuperNode's ``--node-config node-dir=...``;
in simulation, where virtual nodes only know their ``partition-id``, it is
``<nodes-root>/partition-<id>`` under the run's ``nodes-root``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message

from fedunlearn.common import protocol as P
from fedunlearn.common.device import resolve_device
from fedunlearn.common.errors import ConfigError, ModelError
from fedunlearn.common.models import Classifier, ModelSpec, build_model
from fedunlearn.common.nodes import NodeDirectory
from fedunlearn.common.training import TrainConfig
from fedunlearn.common.world import partition_dir

__all__ = ["NodeSession", "node_dir_for"]


def node_dir_for(context: Context, overrides: Mapping[str, Any]) -> Path:
    """The node directory of this SuperNode (deployment) or virtual node (simulation)."""
    if P.NODE_DIR in context.node_config:
        return Path(str(context.node_config[P.NODE_DIR]))
    nodes_root = overrides.get(P.RUN_NODES_ROOT) or context.run_config.get(P.RUN_NODES_ROOT)
    if nodes_root not in (None, "", P.RUN_KEEP[P.RUN_NODES_ROOT]) and "partition-id" in context.node_config:
        return partition_dir(Path(str(nodes_root)), int(context.node_config["partition-id"]))
    raise ConfigError(
        "this node has no node directory: start the SuperNode with --node-config \"node-dir='/path'\" "
        "(made by `fedunlearn node init`)"
    )


@dataclass(frozen=True)
class NodeSession:
    """One handler call's view: the opened node and the server's instructions."""

    node: NodeDirectory
    config: ConfigRecord

    @classmethod
    def start(cls, message: Message, context: Context, overrides: Mapping[str, Any]) -> NodeSession:
        if _simulated(context):  # virtual clients share the machine's cores, one each
            torch.set_num_threads(1)
        config = message.content.config_records.get(P.CONFIG, ConfigRecord())
        return cls(NodeDirectory.open(node_dir_for(context, overrides)), config)

    @property
    def device(self) -> torch.device:
        return resolve_device(str(self.config.get(P.DEVICE, "cpu")))

    @property
    def seed(self) -> int:
        return P.whole_number(self.config.get(P.SEED, 0))

    @property
    def request_ids(self) -> list[str]:
        return [str(r) for r in P.listed(self.config.get(P.REQUEST_IDS, []))]

    def recipe(self) -> TrainConfig:
        return TrainConfig(**json.loads(str(self.config[P.RECIPE])))

    def model(self, message: Message, *, arrays: str = P.ARRAYS) -> Classifier:
        """The server's model in record ``arrays`` (the global model unless told otherwise), rebuilt from
        its architecture name and this node's data shape."""
        shape = self.node.meta["input_shape"]
        spec = ModelSpec(str(self.config[P.MODEL]), in_channels=int(shape[0]), image_size=int(shape[1]),
                         num_classes=self.node.num_classes)
        model = build_model(spec, seed=0)
        record = message.content.array_records.get(arrays)
        if record is None:
            raise ModelError(f"the server sent no model arrays ({arrays})")
        try:
            model.load_state_dict(record.to_torch_state_dict())
        except RuntimeError as err:
            raise ModelError(f"the server's arrays do not fit a {spec.name} model: {err}") from err
        return model.to(self.device)


def _simulated(context: Context) -> bool:
    return P.NODE_DIR not in context.node_config
