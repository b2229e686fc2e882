"""A Grid stand-in that delivers messages straight to a ClientApp in this process.

Fast federation tests without Ray: each node id maps to a node directory; a
``fault`` hook may replace a node's reply (raise, NaN weights, silence) to test
how the server copes. Every message both ways is kept for inspection.
``tiny_scenario``, ``in_process_grid`` and ``shifted_ids`` build the federations of the server tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from fedunlearn.client.app import create_client_app
from fedunlearn.common import protocol as P
from fedunlearn.common.data.tensors import DatasetBundle, LabeledData
from fedunlearn.common.scenario import Scenario, parse_scenario
from fedunlearn.common.world import SimulatedWorld
from tests.messages import act_as_server

Fault = Callable[[Message, Callable[[], Message]], Message | None]


@dataclass
class InProcessGrid:
    client_app: ClientApp
    node_dirs: dict[int, Path]
    faults: dict[int, Fault] = field(default_factory=dict)
    sent: list[Message] = field(default_factory=list)
    received: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        act_as_server()

    def get_node_ids(self) -> list[int]:
        return list(self.node_dirs)

    def _deliver(self, message: Message) -> Message | None:
        node = message.metadata.dst_node_id
        context = Context(run_id=1, node_id=node, node_config={P.NODE_DIR: str(self.node_dirs[node])},
                          state=RecordDict(), run_config={})

        def honest() -> Message:
            try:
                return self.client_app(message, context)
            except Exception as err:  # what a SuperNode does with a raising ClientApp
                return Message(Error(code=2, reason=f"{type(err).__name__}: {err}"), reply_to=message)

        fault = self.faults.get(node)
        return fault(message, honest) if fault else honest()

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = []
        for message in messages:
            self.sent.append(message)
            reply = self._deliver(message)
            if reply is not None:  # None: the node stayed silent (crashed or timed out)
                self.received.append(reply)
                replies.append(reply)
        return replies


def tiny_scenario(*, with_requests: bool = True, baselines: bool = True, **federation: Any) -> Scenario:
    """Three digits clients, four rounds, sample requests from partitions 0 and 1 after round 2. Without
    ``baselines`` (a third of a run) for tests whose checks they do not touch: they run after the gate."""
    requests = [{"round": 2, "partition": 0, "forget": "random:0.1"},
                {"round": 2, "partition": 1, "forget": "random:0.1"}]
    return parse_scenario({
        "scenario": {"name": "tiny", "seed": 0},
        "data": {"dataset": "digits", "partitioner": "iid", "train_size": 900},
        "federation": {"clients": 3, "rounds": 4, "local_epochs": 1, "batch_size": 32, "device": "cpu",
                       **federation},
        "unlearning": {"max_rounds": 2, "params": {"max_steps": 40}},
        "baselines": ({"federated_finetune_rounds": 1} if baselines
                      else {"federated_retrain": False, "federated_finetune_rounds": 0}),
        "audit": {"reference_models": 4},
        "requests": requests if with_requests else [],
    })


def in_process_grid(world: SimulatedWorld, faults: dict[int, Fault] | None = None) -> InProcessGrid:
    """The world's nodes (ids 100, 101, ... by partition) behind real ClientApps."""
    paths = world.materialise()
    return InProcessGrid(create_client_app(), {100 + i: p for i, p in enumerate(paths)}, faults or {})


@dataclass(frozen=True)
class TinyRun:
    """A finished federation (conftest.py's ``tiny_run``)."""

    report: dict[str, Any]
    root: Path  # the nodes under root / "nodes", the run directory root / "run"
    world: SimulatedWorld
    grid: InProcessGrid  # every message both ways


ID_OFFSET = 7_000_000  # sample ids no count, round or size could ever equal


def shifted_ids(bundle: DatasetBundle) -> DatasetBundle:
    """``bundle`` with every sample id moved up by ``ID_OFFSET`` (the data unchanged)."""
    def shift(data: LabeledData) -> LabeledData:
        return LabeledData(data.x, data.y, data.ids + ID_OFFSET)

    return replace(bundle, train=shift(bundle.train), test=shift(bundle.test))
