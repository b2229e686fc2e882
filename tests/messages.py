"""Messages as a ServerApp sends them, for tests that stand in for Flower's runtime."""

from __future__ import annotations

from flwr.app import Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

__all__ = ["act_as_server", "to_node"]


def act_as_server() -> None:
    """Flower 1.42 stamps every message with the running task's identity, which its runtime sets before a
    ServerApp runs; a test that builds messages itself sets one."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


def to_node(content: RecordDict, message_type: str, node: int = 1) -> Message:
    act_as_server()
    return Message(content, dst_node_id=node, message_type=message_type)
