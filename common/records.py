"""Weights as Flower records: the one conversion the server and the nodes both make."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from flwr.app import ArrayRecord

__all__ = ["state_arrays"]


def state_arrays(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """A state dict as an ``ArrayRecord``, detached and on the CPU so any device's weights can travel."""
    return ArrayRecord(torch_state_dict={k: v.detach().cpu() for k, v in state.items()})
