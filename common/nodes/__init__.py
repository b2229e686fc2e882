"""Node directories and their forget-request ledgers (framework-free; client/ wraps them).

The names below are imported on first use: the ledger alone (listing or rejecting
requests) and a node's records (filing one: ``NodeRecords``) need no torch, so
``import fedunlearn.common.nodes.ledger`` or ``common.nodes.records`` must not load the
directory module, which does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedunlearn.common.nodes.directory import MISLABELED, NodeDirectory, NodeLayout, materialise_node
    from fedunlearn.common.nodes.ledger import ForgetRequest, Ledger, RequestKind, RequestStatus
    from fedunlearn.common.nodes.records import NodeRecords

__all__ = ["MISLABELED", "ForgetRequest", "Ledger", "NodeDirectory", "NodeLayout", "NodeRecords", "RequestKind",
           "RequestStatus", "materialise_node"]

_HOME = {"MISLABELED": "directory", "NodeDirectory": "directory", "NodeLayout": "directory",
         "materialise_node": "directory", "ForgetRequest": "ledger", "Ledger": "ledger", "RequestKind": "ledger",
         "RequestStatus": "ledger", "NodeRecords": "records"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"fedunlearn.common.nodes.{_HOME[name]}"), name)
