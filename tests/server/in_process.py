"""A Grid stand-in that delivers messages straight to a ClientApp in this process.

Fast federation tests without Ray: each node id maps to a node directory; a
``fault`` hook may replace a node's reply (raise, NaN weights, silence) to test
how the server copes. Every message both ways is kept for inspection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity

from common import protocol as P

Fault = Callable[[Message, Callable[[], Message]], Message | None]


@dataclass
class InProcessGrid:
    client_app: ClientApp
    node_dirs: dict[int, Path]
    faults: dict[int, Fault] = field(default_factory=dict)
    sent: list[Message] = field(default_factory=list)
    received: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        # what the simulation runtime sets before a ServerApp runs: messages need a run identity
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1

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
