"""The fedunlearn ClientApp: one short handler per message type (see common/protocol.py).

Handlers open the node, call into ``client.handlers`` and wrap the result in a
reply. An exception becomes Flower's error reply, which the server reports;
nothing on the node changes unless a handler ran to its end (a commit is one
ledger transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedunlearn.client import handlers
from fedunlearn.client.session import NodeSession
from fedunlearn.common import protocol as P

__all__ = ["app", "create_client_app"]


def create_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """A ClientApp; ``overrides`` stand in for run config keys (the simulation runner passes
    ``nodes-root`` this way, because the Python simulation API carries no run config)."""
    fixed = dict(overrides or {})
    client_app = ClientApp()

    def reply(work: Callable[[NodeSession, Message], RecordDict]) -> Callable[[Message, Context], Message]:
        def handle(message: Message, context: Context) -> Message:
            session = NodeSession.start(message, context, fixed)
            return Message(work(session, message), reply_to=message)
        return handle

    client_app.query(P.ACTION_STATUS)(reply(lambda s, _m: handlers.status(s)))
    client_app.train()(reply(handlers.train_round))
    client_app.train(P.ACTION_UNLEARN)(reply(handlers.unlearn))
    client_app.evaluate()(reply(handlers.evaluate))
    client_app.evaluate(P.ACTION_AUDIT)(reply(handlers.audit))
    client_app.evaluate(P.ACTION_CALIBRATE)(reply(handlers.calibrate))
    client_app.query(P.ACTION_COMMIT)(reply(lambda s, _m: handlers.commit(s)))
    client_app.query(P.ACTION_DEFER)(reply(lambda s, _m: handlers.defer(s)))
    return client_app


app = create_client_app()
