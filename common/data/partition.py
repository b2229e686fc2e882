"""Split a training set over clients: IID, Dirichlet(alpha) label skew, or whole classes.

Partitions are index tensors into the labels they were computed from (not
sample ids), so a caller can take ``data.subset(index)`` and keep the ids.
Every partitioner is seeded and returns disjoint, covering, non-empty parts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fedunlearn.common.errors import ConfigError, DataError, UnknownNameError
from fedunlearn.common.registry import Registry

__all__ = [
    "DIRICHLET_MAX_TRIES",
    "DIRICHLET_MIN_SIZE",
    "PARTITIONERS",
    "Partitioner",
    "PartitionerSpec",
    "dirichlet_minimum",
    "parse_partitioner",
    "partition",
]

# Dirichlet draws can leave a client (nearly) empty; such a client cannot fill
# a batch or hold anything out, so we redraw until each has this many samples
# (capped for small datasets, see dirichlet_minimum), a bounded number of times.
DIRICHLET_MIN_SIZE = 10
DIRICHLET_MAX_TRIES = 1000


@dataclass(frozen=True)
class PartitionerSpec:
    """A validated partitioner choice, e.g. ``dirichlet:0.5`` -> name="dirichlet", alpha=0.5."""

    name: str
    alpha: float | None = None

    def __post_init__(self) -> None:
        entry = _lookup(self.name)
        if entry.needs_alpha and self.alpha is None:
            raise ConfigError(f"partitioner {self.name} needs alpha; write it as {entry.usage}")
        if not entry.needs_alpha and self.alpha is not None:
            raise ConfigError(f"partitioner {self.name} takes no parameter; write it as {entry.usage}")
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ConfigError(
                f"{self.name} alpha must be a finite number > 0, got {self.alpha}; e.g. {self.name}:0.5 "
                "(smaller alpha = more label skew)"
            )

    def __str__(self) -> str:
        return self.name if self.alpha is None else f"{self.name}:{self.alpha:g}"


# (labels (N,), number of parts, spec, rng) -> index arrays
SplitFn = Callable[[np.ndarray, int, PartitionerSpec, np.random.Generator], list[np.ndarray]]


@dataclass(frozen=True)
class Partitioner:
    """A registered partitioner: how it splits, whether it takes alpha, and how to write it."""

    split: SplitFn
    usage: str
    needs_alpha: bool = False


PARTITIONERS: Registry[Partitioner] = Registry("partitioner")


def _lookup(name: str) -> Partitioner:
    try:
        return PARTITIONERS.get(name)
    except UnknownNameError:
        usages = ", ".join(PARTITIONERS.get(n).usage for n in PARTITIONERS)
        raise UnknownNameError(f"unknown partitioner {name!r}; use one of: {usages}") from None


def parse_partitioner(text: str) -> PartitionerSpec:
    """``"iid"``, ``"class"`` or ``"dirichlet:<alpha>"`` -> a validated spec."""
    name, sep, argument = text.strip().partition(":")
    if not sep:
        return PartitionerSpec(name)
    entry = _lookup(name)
    if not entry.needs_alpha:
        raise ConfigError(f"partitioner {name} takes no parameter, got {text!r}; write it as {entry.usage}")
    try:
        alpha = float(argument)
    except ValueError:
        raise ConfigError(
            f"{name} alpha must be a number > 0, got {argument!r} in {text!r}; e.g. {name}:0.5"
        ) from None
    return PartitionerSpec(name, alpha=alpha)


def partition(
    labels: torch.Tensor, num_partitions: int, spec: PartitionerSpec, *, seed: int
) -> list[torch.Tensor]:
    """Split positions 0..N-1 into ``num_partitions`` sorted int64 index tensors.

    labels: (N,) class labels. The parts are disjoint, cover every position and
    none is empty; the same (labels, num_partitions, spec, seed) gives the same parts.
    """
    if labels.ndim != 1:
        raise DataError(f"labels must be a 1-D tensor, got shape {tuple(labels.shape)}")
    n = int(labels.shape[0])
    if not 1 <= num_partitions <= n:
        raise ConfigError(
            f"num_partitions must be between 1 and the number of samples ({n}), got {num_partitions}; "
            "use fewer partitions or more data"
        )
    rng = np.random.default_rng(seed)
    parts = _lookup(spec.name).split(labels.cpu().numpy(), num_partitions, spec, rng)
    return [torch.from_numpy(np.sort(part)).to(torch.int64) for part in parts]


def _split_iid(
    labels: np.ndarray, k: int, spec: PartitionerSpec, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffle, then cut into k parts whose sizes differ by at most one."""
    return list(np.array_split(rng.permutation(len(labels)), k))


def _split_by_class(
    labels: np.ndarray, k: int, spec: PartitionerSpec, rng: np.random.Generator
) -> list[np.ndarray]:
    """Deal the classes present, in a seeded order, round-robin: each part gets whole classes."""
    classes = np.unique(labels)
    if k > len(classes):
        raise ConfigError(
            f"the class partitioner gives each partition whole classes, so num_partitions must be <= "
            f"the {len(classes)} classes present, got {k}; use fewer partitions or dirichlet:<alpha>"
        )
    order = rng.permutation(classes)
    return [np.flatnonzero(np.isin(labels, order[i::k])) for i in range(k)]


def dirichlet_minimum(num_samples: int, num_partitions: int) -> int:
    """Smallest acceptable Dirichlet part: DIRICHLET_MIN_SIZE, but at most half the mean part size."""
    return max(1, min(DIRICHLET_MIN_SIZE, num_samples // (2 * num_partitions)))


def _split_dirichlet(
    labels: np.ndarray, k: int, spec: PartitionerSpec, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per class, share its samples over the k parts by proportions ~ Dir(alpha); redraw small parts."""
    alpha = float(spec.alpha or 0.0)
    minimum = dirichlet_minimum(len(labels), k)
    for _ in range(DIRICHLET_MAX_TRIES):
        parts = _dirichlet_draw(labels, k, alpha, rng)
        if min(len(part) for part in parts) >= minimum:
            return parts
    raise ConfigError(
        f"{spec} left a partition with fewer than {minimum} samples in each of {DIRICHLET_MAX_TRIES} "
        f"draws ({len(labels)} samples, {len(np.unique(labels))} classes, {k} partitions); "
        "raise alpha or use fewer partitions"
    )


def _dirichlet_draw(labels: np.ndarray, k: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    chunks: list[list[np.ndarray]] = [[] for _ in range(k)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        shares = rng.dirichlet(np.full(k, alpha))
        cuts = np.floor(np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        for bucket, piece in zip(chunks, np.split(members, cuts), strict=True):
            bucket.append(piece)
    return [np.concatenate(bucket) for bucket in chunks]


PARTITIONERS.add("iid", Partitioner(_split_iid, usage="iid"))
PARTITIONERS.add(
    "dirichlet",
    Partitioner(_split_dirichlet, usage="dirichlet:<alpha> (e.g. dirichlet:0.5)", needs_alpha=True),
)
PARTITIONERS.add("class", Partitioner(_split_by_class, usage="class"))
