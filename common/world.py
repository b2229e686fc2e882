"""A simulated world: the node directories of a scenario and the data subjects who file requests.

Only simulations have one. It creates ``<nodes-root>/partition-<i>`` for every
virtual client and, between rounds, files the scenario's scheduled requests
through the same node API a real operator uses. Because it filed them, it
knows the forgotten sample ids; they go into the report for evaluation and
never into a Flower message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.data.forget import parse_forget_spec, select_forget_ids
from fedunlearn.common.data.tensors import DatasetBundle
from fedunlearn.common.errors import RequestError
from fedunlearn.common.nodes import NodeDirectory, NodeLayout, materialise_node
from fedunlearn.common.scenario import TAG_PREFIX, Scenario, ScheduledRequest

__all__ = ["FiledRequest", "SimulatedWorld", "partition_dir"]

log = logging.getLogger(__name__)


def partition_dir(nodes_root: Path, partition: int) -> Path:
    return Path(nodes_root) / f"partition-{partition}"


@dataclass(frozen=True)
class FiledRequest:
    request_id: str
    partition: int
    kind: str
    forget_ids: tuple[int, ...]
    round: int


class SimulatedWorld:
    def __init__(self, scenario: Scenario, nodes_root: Path, bundle: DatasetBundle | None = None) -> None:
        self.scenario = scenario
        self.nodes_root = Path(nodes_root)
        data = scenario.data
        self.bundle = bundle or load_dataset(data.dataset, root=data.data_dir, seed=scenario.seed)
        self.filed: list[FiledRequest] = []

    def layout(self, partition: int) -> NodeLayout:
        data = self.scenario.data
        return NodeLayout(dataset=data.dataset, partition=partition, num_partitions=self.scenario.federation.clients,
                          partitioner=data.partitioner, seed=self.scenario.seed,
                          holdout_fraction=data.holdout_fraction, train_size=data.train_size,
                          mislabeled=data.mislabeled_share(partition))

    def materialise(self) -> list[Path]:
        """Create every missing node directory (existing ones keep their ledgers)."""
        paths = []
        for partition in range(self.scenario.federation.clients):
            path = partition_dir(self.nodes_root, partition)
            if not (path / "node.json").exists():
                materialise_node(path, self.bundle, self.layout(partition))
            paths.append(path)
        return paths

    def node(self, partition: int) -> NodeDirectory:
        return NodeDirectory.open(partition_dir(self.nodes_root, partition))

    def file_due(self, completed_round: int) -> list[FiledRequest]:
        """File the requests scheduled after ``completed_round``."""
        due = [r for r in self.scenario.requests if r.round == completed_round]
        new: list[FiledRequest] = []
        for scheduled in due:
            for partition in self._partitions(scheduled):
                new.append(self._file(partition, scheduled))
        self.filed.extend(new)
        return new

    def _partitions(self, scheduled: ScheduledRequest) -> list[int]:
        if scheduled.partition != "all":
            return [int(scheduled.partition)]
        target = parse_forget_spec(scheduled.forget).class_id
        return [p for p in range(self.scenario.federation.clients)
                if target in self.node(p).retain().y.tolist()]

    def _file(self, partition: int, scheduled: ScheduledRequest) -> FiledRequest:
        node = self.node(partition)
        if scheduled.forget == "all":
            request = node.submit(everything=True, reason=scheduled.reason)
        elif scheduled.forget.startswith(TAG_PREFIX):
            tag = scheduled.forget.removeprefix(TAG_PREFIX)
            tagged = sorted(node.tagged(tag) & set(node.retain().ids.tolist()))
            if not tagged:
                raise RequestError(f"partition {partition} holds no training sample tagged {tag!r}")
            request = node.submit(ids=tagged, reason=scheduled.reason)
        else:
            spec = parse_forget_spec(scheduled.forget)
            if spec.kind == "class":
                request = node.submit(target_class=spec.class_id, reason=scheduled.reason)
            else:
                ids = select_forget_ids(spec, node.retain(), num_classes=node.num_classes,
                                        seed=self.scenario.seed + partition)
                if len(ids) == 0:
                    raise RequestError(f"{scheduled.forget} selects no sample on partition {partition}")
                request = node.submit(ids=torch.as_tensor(ids).tolist(), reason=scheduled.reason)
        log.info("partition %d filed %s (%s, %d samples)", partition, request.request_id, request.kind,
                 len(request.sample_ids))
        return FiledRequest(request.request_id, partition, request.kind, request.sample_ids, scheduled.round)
