"""``Messenger``, the one place replies are sorted into answers and failures, with fake replies from a grid
stand-in (Flower's strategy tests build their replies the same way): no node, no ClientApp."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flwr.app import ConfigRecord, Error, Message, Metadata, MetricRecord, RecordDict

from fedunlearn.common import protocol as P
from fedunlearn.server.messaging import Messenger, content_bytes
from tests.messages import act_as_server

Answer = Callable[[Message], Message | None]


@dataclass
class FakeGrid:
    """Each node answers with ``answers[node](message)``; None is a node that never replies."""

    answers: dict[int, Answer]
    sent: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        act_as_server()

    def get_node_ids(self) -> list[int]:
        return list(self.answers)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        batch = list(messages)
        self.sent.extend(batch)
        return [r for m in batch if (r := self.answers[m.metadata.dst_node_id](m)) is not None]


def _ok(message: Message) -> Message:
    return Message(RecordDict({P.METRICS: MetricRecord({P.NUM_EXAMPLES: 3})}), reply_to=message)


def _error(reason: str) -> Answer:
    return lambda message: Message(Error(code=2, reason=reason), reply_to=message)


def test_answers_errors_and_silence_are_sorted_by_node() -> None:
    grid = FakeGrid({100: _ok, 101: _error("ClientApp crashed"), 102: lambda message: None})
    replies = Messenger(grid, timeout=60).broadcast([100, 101, 102], P.MSG_TRAIN, RecordDict(), "g")  # type: ignore[arg-type]
    assert set(replies.answers) == {100} and replies.answers[100].metric_records[P.METRICS][P.NUM_EXAMPLES] == 3
    assert replies.failures == {101: "error reply (2): ClientApp crashed", 102: "no reply within 60 s"}
    assert {m.metadata.dst_node_id for m in grid.sent} == {100, 101, 102}
    assert {m.metadata.message_type for m in grid.sent} == {P.MSG_TRAIN}


def test_a_ray_wrapped_error_is_reported_by_its_last_line() -> None:
    reason = ("\x1b[36mray::ClientAppActor.run()\x1b[39m\nTraceback (most recent call last):\n  File \"x.py\"\n"
              "Exception ClientAppException occurred. ValueError: request req-1 is committed, not pending'>")
    replies = Messenger(FakeGrid({100: _error(reason)}), timeout=5).broadcast(  # type: ignore[arg-type]
        [100], P.MSG_UNLEARN, RecordDict(), "g")
    assert replies.failures == {100: "error reply (2): ValueError: request req-1 is committed, not pending"}


def test_each_node_gets_its_own_copy_and_only_answers_are_metered() -> None:
    grid = FakeGrid({100: _ok, 101: _error("crashed")})
    messenger = Messenger(grid, timeout=60)  # type: ignore[arg-type]
    content = RecordDict({P.CONFIG: ConfigRecord({P.ROUND: 1})})
    with messenger.metered() as traffic:
        messenger.broadcast([100, 101], P.MSG_STATUS, content, "g")
    assert grid.sent[0].content is not grid.sent[1].content
    assert traffic.sent == 2 * content_bytes(content)
    assert traffic.received == content_bytes(_ok(grid.sent[0]).content)  # the error reply carries no content
    with messenger.metered() as later:
        pass
    assert later.total == 0


SUPERLINK = 1  # Flower's SUPERLINK_NODE_ID: the sender of the replies the SuperLink writes itself


def _pushed(messages: Iterable[Message]) -> list[Message]:
    """Number the messages as Flower's grids do when they push them (the id a reply points back to)."""
    batch = list(messages)
    for number, message in enumerate(batch):
        message.metadata.__dict__["_message_id"] = f"pushed-{number}"
    return batch


def _superlink_error(message: Message, reason: str) -> Message:
    """The reply the SuperLink writes when it cannot deliver ``message``: sent from its own node id."""
    asked = message.metadata
    metadata = Metadata(run_id=asked.run_id, message_id="", src_node_id=SUPERLINK, dst_node_id=asked.src_node_id,
                        reply_to_message_id=asked.message_id, group_id=asked.group_id, created_at=asked.created_at,
                        ttl=asked.ttl, message_type=asked.message_type)
    return Message(metadata=metadata, error=Error(code=3, reason=reason))


@dataclass
class SuperLinkGrid:
    """A SuperLink whose database is locked for node 101: it answers that message with its own error reply,
    and slips in a reply to a message this exchange never sent."""

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        batch = _pushed(messages)
        replies = [_ok(m) if m.metadata.dst_node_id == 100 else _superlink_error(m, "database is locked")
                   for m in batch]
        stray = _superlink_error(batch[0], "stale")
        stray.metadata.__dict__["_reply_to_message_id"] = "sent-by-an-earlier-exchange"
        return [*replies, stray]


def test_a_superlink_error_reply_counts_for_the_node_asked_and_a_stray_reply_for_none() -> None:
    replies = Messenger(SuperLinkGrid(), timeout=5).broadcast([100, 101], P.MSG_TRAIN, RecordDict(), "g")  # type: ignore[arg-type]
    assert set(replies.answers) == {100}
    assert replies.failures == {101: "error reply (3): database is locked"}
