"""Sending one message type to many nodes and sorting the replies into answers and failures.

Every exchange goes through ``Messenger.ask`` so that byte counts (for the
report's cost comparison) and failure handling live in one place: an error
reply or a node that does not answer in time becomes a named failure, never
an exception that ends the run.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

__all__ = ["Messenger", "Replies", "Traffic", "content_bytes"]

log = logging.getLogger(__name__)


def content_bytes(content: RecordDict) -> int:
    """Payload bytes of a message: arrays by Flower's count, configs and metrics as their JSON text
    (Flower 1.42's ConfigRecord.count_bytes fails on an empty list value)."""
    arrays = sum(record.count_bytes() for record in content.array_records.values())
    configs = sum(len(json.dumps(dict(record), default=str)) for record in content.config_records.values())
    metrics = sum(len(json.dumps(dict(record), default=str)) for record in content.metric_records.values())
    return arrays + configs + metrics


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _gist(reason: str, limit: int = 300) -> str:
    """The informative last line of a (possibly multi-line, Ray-wrapped) error reason."""
    lines = [line.strip() for line in _ANSI.sub("", reason).splitlines() if line.strip().strip("'>")]
    gist = lines[-1] if lines else reason
    return gist.removeprefix("Exception ClientAppException occurred. ").strip("'>")[:limit]


@dataclass
class Traffic:
    """Bytes the server sent and received, accumulated over the exchanges it is given to."""

    sent: int = 0
    received: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.received


@dataclass
class Replies:
    answers: dict[int, RecordDict] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)


@dataclass
class Messenger:
    grid: Grid
    timeout: float
    traffic_sinks: list[Traffic] = field(default_factory=list)

    def ask(self, plan: Mapping[int, tuple[str, RecordDict]], group: str) -> Replies:
        """Send each node its (message type, content) at once and wait, up to the timeout, for replies."""
        messages = [Message(content, dst_node_id=node, message_type=kind, group_id=group)
                    for node, (kind, content) in plan.items()]
        self._count(sum(content_bytes(m.content) for m in messages), 0)
        replies = Replies()
        received = list(self.grid.send_and_receive(messages, timeout=self.timeout))
        # the grid numbers each message as it pushes it
        addressee = {m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id}
        for reply in received:
            # by the message it answers, not by its sender: the SuperLink's own error replies (its
            # database locked, a node gone) come from the SuperLink's node id, not the node asked
            node = addressee.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            if node not in plan:
                log.warning("ignored a reply from node %d to a message this exchange did not send", node)
                continue
            if reply.has_error():
                replies.failures[node] = f"error reply ({reply.error.code}): {_gist(reply.error.reason or '')}"
                continue
            self._count(0, content_bytes(reply.content))
            replies.answers[node] = reply.content
        for node in plan:
            if node not in replies.answers and node not in replies.failures:
                replies.failures[node] = f"no reply within {self.timeout:.0f} s"
        for node, why in replies.failures.items():
            log.warning("%s to node %d failed: %s", plan[node][0], node, why)
        return replies

    def broadcast(self, nodes: Iterable[int], kind: str, content: RecordDict, group: str) -> Replies:
        """The same message to every node (each gets its own copy)."""
        return self.ask({node: (kind, content.copy()) for node in nodes}, group)

    @contextmanager
    def metered(self) -> Iterator[Traffic]:
        """Count the bytes of every exchange made inside the ``with`` block."""
        traffic = Traffic()
        self.traffic_sinks.append(traffic)
        try:
            yield traffic
        finally:
            self.traffic_sinks.remove(traffic)

    def _count(self, sent: int, received: int) -> None:
        for sink in self.traffic_sinks:
            sink.sent += sent
            sink.received += received
