"""Node directories and their forget-request ledgers (framework-free; client/ wraps them)."""

from common.nodes.directory import MISLABELED, NodeDirectory, NodeLayout, materialise_node
from common.nodes.ledger import ForgetRequest, Ledger, RequestKind, RequestStatus

__all__ = ["MISLABELED", "ForgetRequest", "Ledger", "NodeDirectory", "NodeLayout", "RequestKind", "RequestStatus",
           "materialise_node"]
