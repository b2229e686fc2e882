"""Seeded, class-stratified splits of one labelled split.

Shared by the digits loader (which has no official test split) and by the
train / hold-out split every node needs: the hold-out samples are the
non-members that unlearning and auditing compare forgotten samples against,
so their class mix should match the training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError, DataError

__all__ = ["HoldoutRoles", "federation_pool", "holdout_roles", "stratified_pick", "train_holdout_split"]


def stratified_pick(labels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted positions of ``count`` samples whose class mix matches ``labels`` as closely as integers allow.

    labels: (N,) int64; 0 <= count <= N. Each class gets its proportional share
    rounded by largest remainder, so no class is ever asked for more than it has.
    """
    classes, counts = torch.unique(labels, return_counts=True)
    quotas = _proportional_quotas(counts, count)
    picked = []
    for cls, quota in zip(classes.tolist(), quotas, strict=True):
        members = torch.nonzero(labels == cls).flatten()
        picked.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    if not picked:
        return torch.zeros(0, dtype=torch.int64)
    return torch.sort(torch.cat(picked)).values


def _proportional_quotas(counts: torch.Tensor, total: int) -> list[int]:
    """Split ``total`` over classes in proportion to ``counts``; leftovers go to the largest remainders."""
    exact = counts.double() * total / max(int(counts.sum()), 1)
    quotas = exact.floor().long()
    leftover = total - int(quotas.sum())
    order = torch.argsort(exact - quotas, descending=True, stable=True)
    quotas[order[:leftover]] += 1
    return [int(q) for q in quotas]


def train_holdout_split(
    train: LabeledData, *, train_size: int | None, holdout_size: int, seed: int
) -> tuple[LabeledData, LabeledData]:
    """Split the official train split into (training set, disjoint hold-out set), both stratified.

    The hold-out is drawn first so its size is exact; the training set is then
    the rest, capped at ``train_size`` (None keeps all of it). Both keep the
    original sample ids and id order.
    """
    _check_sizes(len(train), train_size, holdout_size)
    generator = torch.Generator().manual_seed(seed)
    holdout_pos = stratified_pick(train.y, holdout_size, generator)
    in_holdout = torch.zeros(len(train), dtype=torch.bool)
    in_holdout[holdout_pos] = True
    rest_pos = torch.nonzero(~in_holdout).flatten()
    if train_size is not None:
        rest_pos = rest_pos[stratified_pick(train.y[rest_pos], train_size, generator)]
    return train.subset(rest_pos), train.subset(holdout_pos)


def _check_sizes(available: int, train_size: int | None, holdout_size: int) -> None:
    if holdout_size < 1:
        raise ConfigError(f"holdout_size must be >= 1 (the non-members to compare with), got {holdout_size}")
    if train_size is not None and train_size < 1:
        raise ConfigError(f"train_size must be >= 1 or unset (use every remaining sample), got {train_size}")
    needed = holdout_size + (train_size if train_size is not None else 1)
    if needed > available:
        wanted = f"train_size={train_size} + " if train_size is not None else "at least 1 training sample + "
        raise DataError(
            f"the train split has {available} samples, too few for {wanted}holdout_size={holdout_size}; "
            "lower train_size or holdout_size"
        )


def federation_pool(train: LabeledData, train_size: int | None, seed: int) -> tuple[LabeledData, LabeledData]:
    """(the federation's pool, the public rest) of a dataset's train split.

    The pool is what the partitions divide (all of it without ``train_size``); the rest is data
    no client holds, which the server may use (e.g. to train reference models for the audit).
    """
    if train_size is None:
        return train, train.subset(torch.zeros(len(train), dtype=torch.bool))
    if not 0 < train_size <= len(train):
        raise ConfigError(f"train_size must be in 1..{len(train)}, got {train_size}")
    in_pool = torch.zeros(len(train), dtype=torch.bool)
    in_pool[stratified_pick(train.y, train_size, torch.Generator().manual_seed(seed))] = True
    return train.subset(in_pool), train.subset(~in_pool)


@dataclass(frozen=True)
class HoldoutRoles:
    """A hold-out cut in two for good: ``method`` may steer unlearning (its reference and stopping rule);
    ``audit`` is sealed for the gate, so a model is never graded on the samples it stopped on."""

    method: LabeledData
    audit: LabeledData


AUDIT_SEAL_SEED = 7_919  # fixed: the cut must not move between rounds, runs or processes


def holdout_roles(holdout: LabeledData) -> HoldoutRoles:
    """Half of each class (rounded down) to the method, the rest sealed for the audit; a function of the
    hold-out alone, which never changes (forget requests purge training samples only)."""
    order = torch.argsort(holdout.ids)  # independent of storage order
    ordered = holdout.subset(order)
    in_method = torch.zeros(len(ordered), dtype=torch.bool)
    in_method[stratified_pick(ordered.y, len(ordered) // 2, torch.Generator().manual_seed(AUDIT_SEAL_SEED))] = True
    return HoldoutRoles(method=ordered.subset(in_method), audit=ordered.subset(~in_method))
