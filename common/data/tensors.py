"""In-memory labelled samples that carry their stable sample ids.

Everything downstream (partitioning, forgetting, auditing) selects samples by
id, so ids travel with the tensors and survive every subset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["DatasetBundle", "LabeledData", "Preprocessing", "concat"]


@dataclass(frozen=True)
class LabeledData:
    """Model-ready samples.

    x:   (N, C, H, W) float32, already normalised by the dataset's Preprocessing
    y:   (N,) int64 class labels
    ids: (N,) int64 stable sample ids (index in the dataset's own split)
    """

    x: torch.Tensor
    y: torch.Tensor
    ids: torch.Tensor

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        if self.y.shape != (n,) or self.ids.shape != (n,):
            raise ValueError(
                f"x, y, ids disagree in length: {tuple(self.x.shape)}, "
                f"{tuple(self.y.shape)}, {tuple(self.ids.shape)}"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: torch.Tensor) -> LabeledData:
        """Rows picked by an integer index or a boolean mask."""
        return LabeledData(self.x[index], self.y[index], self.ids[index])

    def where_ids(self, ids: torch.Tensor, *, keep: bool) -> LabeledData:
        """Rows whose id is in ``ids`` (keep=True) or not in it (keep=False)."""
        mask = torch.isin(self.ids, ids)
        return self.subset(mask if keep else ~mask)

    def where_classes(self, classes: tuple[int, ...], *, keep: bool) -> LabeledData:
        """Rows whose label is in ``classes`` (keep=True) or not in it (keep=False: the classes that stay)."""
        mask = torch.isin(self.y, torch.tensor(list(classes), dtype=torch.int64))
        return self.subset(mask if keep else ~mask)

    def with_labels(self, y: torch.Tensor) -> LabeledData:
        """Same samples, other labels (random-label methods, class references)."""
        return LabeledData(self.x, y, self.ids)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) mini-batches; cheaper than a DataLoader for tensors in RAM."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield self.x[idx], self.y[idx]

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch drawn with replacement: for loops that cycle a small set."""
        idx = torch.randint(0, len(self), (batch_size,), generator=generator)
        return self.x[idx], self.y[idx]


def concat(*parts: LabeledData) -> LabeledData:
    """The samples of every part, in order."""
    return LabeledData(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]),
                       torch.cat([p.ids for p in parts]))


@dataclass(frozen=True)
class Preprocessing:
    """How raw loader values become model inputs: (raw / scale - mean) / std per channel.

    Stored in manifests so an edge device reproduces the input exactly.
    """

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, raw: torch.Tensor) -> torch.Tensor:
        """raw: (N, C, H, W) in loader units (uint8 pixels, digits' 0..16) -> float32."""
        x = raw.to(torch.float32) / self.scale
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (x - mean) / std


@dataclass(frozen=True)
class DatasetBundle:
    """A dataset's train and test splits plus what a model and a manifest need to know."""

    name: str
    train: LabeledData
    test: LabeledData
    class_names: tuple[str, ...]
    preprocessing: Preprocessing

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample."""
        c, h, w = self.train.x.shape[1:]
        return (int(c), int(h), int(w))
