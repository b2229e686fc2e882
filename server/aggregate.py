"""Checking client updates and combining them into the next global model.

Training rounds use FedAvg (weights = retain examples). An unlearning round
combines two groups: the requesting clients' updates, each of which its local
stopping rule sized to make *its own* forget set indistinguishable, and the
other clients' retain-data updates. Plain FedAvg would scale a requester's
update by its share of all examples (1/5 with five equal clients), so a forget
set would only move a fifth of the way per round. Instead each group is
averaged on its own (requesters weighted by forget-set size, the others by
examples); the requesters' mean is applied in full and the others' mean scaled
by their share of all retain examples, as FedAvg would weigh their training.
Tried and rejected: summing the requesters' updates (four class requesters
cost 33 points of test accuracy on digits-class) and applying the others' mean
in full (a single non-IID trainer then dragged digits-class 4-12 points).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["State", "fedavg", "rejection_reason", "two_group_update"]

State = Mapping[str, torch.Tensor]


def rejection_reason(update: State, reference: State) -> str | None:
    """Why an update cannot be used (wrong keys or shapes, NaN/Inf), or None if it can."""
    if set(update) != set(reference):
        missing, extra = sorted(set(reference) - set(update)), sorted(set(update) - set(reference))
        return f"arrays do not match the model (missing {missing[:3]}, unexpected {extra[:3]})"
    for key, value in update.items():
        if tuple(value.shape) != tuple(reference[key].shape):
            return f"array {key} has shape {tuple(value.shape)}, expected {tuple(reference[key].shape)}"
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"array {key} holds NaN or Inf"
    return None


def fedavg(updates: Sequence[tuple[State, float]]) -> dict[str, torch.Tensor]:
    """Example-weighted mean of float arrays; integer buffers (counters) come from the first update."""
    if not updates:
        raise ValueError("fedavg needs at least one update")
    total = float(sum(weight for _, weight in updates))
    if total <= 0:
        raise ValueError("fedavg needs a positive total weight")
    first = updates[0][0]
    merged = {}
    for key, value in first.items():
        if value.is_floating_point():
            merged[key] = sum((state[key].double() * (weight / total) for state, weight in updates),
                              torch.zeros_like(value, dtype=torch.float64)).to(value.dtype)
        else:
            merged[key] = value.clone()
    return merged


def two_group_update(
    current: State, requesters: Sequence[tuple[State, float]], others: Sequence[tuple[State, float]],
    others_share: float = 1.0,
) -> dict[str, torch.Tensor]:
    """current + the requesters' weighted mean update + ``others_share`` x the others' weighted mean update.

    others_share is the others' part of all retain examples, the weight FedAvg would give their
    training: a few non-IID trainers applied in full would drag the model towards their classes.
    """
    merged = {key: value.clone() for key, value in current.items()}
    for group, scale in ((requesters, 1.0), (others, others_share)):
        if not group:
            continue
        mean = fedavg(group)
        for key, value in merged.items():
            if value.is_floating_point():
                merged[key] = value + scale * (mean[key] - current[key])
    return merged
