"""Non-members the server lends to an audit: its own test images.

A class request is audited against unseen images of the same class
(``common.audit.local``). A node often has none in its sealed hold-out: under a
Dirichlet split most nodes hold a handful of a class, or none, and half of its
hold-out goes to the method. The server's test split has such images, and
nobody trained on them: not the federation, not the reference models. The test
accuracy of a class phase leaves the forgotten classes out, so lending them
costs the accuracy measurement nothing.

A sample audit may borrow them too (``[audit].lent_test_images``): a node's sealed
hold-out is a few hundred samples, too few to see a small leak. The node keeps
the lent images that match its forget set's class mix, so the two sides differ
by membership, not by class.

The server sends the images with the reference models' statistics on them
(what each reference's logit confidence is), so a node can run LiRA and RMIA on
them as on its own samples. The node scores them with the audited model next to
its forget samples and, as always, sends back only numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from fedunlearn.common.audit.calibrated import Calibration
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import RequestError

__all__ = ["Exemplars", "exemplars_from_record", "exemplars_record"]

X, Y, IDS, STATISTIC = "x", "y", "ids", "statistic"


@dataclass(frozen=True)
class Exemplars:
    """data: test images of the forgotten classes; statistic: the references' (K, N) logit confidence
    on them, None when the gate runs without references."""

    data: LabeledData
    statistic: np.ndarray | None

    def __post_init__(self) -> None:
        if self.statistic is not None and (self.statistic.ndim != 2 or self.statistic.shape[1] != len(self.data)):
            raise ValueError(f"reference statistics of shape {self.statistic.shape} do not cover "
                             f"{len(self.data)} exemplars")

    def __len__(self) -> int:
        return len(self.data)

    def of_classes(self, classes: tuple[int, ...]) -> Exemplars:
        """The exemplars of ``classes`` only (a node audits its own requests' classes)."""
        return self._kept(torch.isin(self.data.y, torch.tensor(classes, dtype=torch.int64)))

    def like(self, labels: torch.Tensor) -> Exemplars:
        """The largest share of the exemplars whose class mix is that of ``labels`` (a sample audit's forget set),
        the first of each class in the order lent; none when a class of ``labels`` has no exemplar."""
        if not len(labels) or not len(self):
            return self._kept(torch.zeros(len(self), dtype=torch.bool))
        classes = max(int(labels.max()), int(self.data.y.max())) + 1
        wanted = torch.bincount(labels, minlength=classes).double()
        have = torch.bincount(self.data.y, minlength=classes).double()
        scale = float((have[wanted > 0] / wanted[wanted > 0]).min())
        one_hot = torch.nn.functional.one_hot(self.data.y, classes)
        rank = (one_hot.cumsum(0) * one_hot).sum(1) - 1  # each exemplar's place among those of its class
        return self._kept(rank < torch.floor(wanted * scale).long()[self.data.y])

    def _kept(self, keep: torch.Tensor) -> Exemplars:
        statistic = None if self.statistic is None else self.statistic[:, keep.numpy()]
        return Exemplars(self.data.subset(keep), statistic)

    def calibration(self) -> Calibration:
        if self.statistic is None:
            raise RequestError("the server lent class exemplars without the references' statistics on them")
        return Calibration.offline(self.statistic)


def exemplars_record(exemplars: Exemplars) -> ArrayRecord:
    arrays = {X: exemplars.data.x.numpy(), Y: exemplars.data.y.numpy(), IDS: exemplars.data.ids.numpy()}
    if exemplars.statistic is not None:
        arrays[STATISTIC] = exemplars.statistic
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()})


def exemplars_from_record(record: ArrayRecord, *, input_shape: tuple[int, ...], num_classes: int) -> Exemplars:
    """The server's exemplars, checked against this node's data (image shape, class range, finite values):
    a malformed loan is refused with the reason, never audited."""
    try:
        x = torch.as_tensor(record[X].numpy(), dtype=torch.float32)
        y = torch.as_tensor(record[Y].numpy(), dtype=torch.int64)
        ids = torch.as_tensor(record[IDS].numpy(), dtype=torch.int64)
        statistic = record[STATISTIC].numpy().astype(np.float64) if STATISTIC in record else None
        data = LabeledData(x, y, ids)
        exemplars = Exemplars(data, statistic)
    except (KeyError, TypeError, ValueError) as err:
        raise RequestError(f"malformed class exemplars ({type(err).__name__}: {str(err)[:120]})") from err
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise RequestError(f"class exemplars of shape {tuple(x.shape[1:])} do not fit this node's "
                           f"{tuple(input_shape)} images")
    if len(y) and not (int(y.min()) >= 0 and int(y.max()) < num_classes):
        raise RequestError(f"class exemplars name classes outside 0..{num_classes - 1}")
    if not torch.isfinite(x).all() or (statistic is not None and not np.isfinite(statistic).all()):
        raise RequestError("class exemplars contain NaN or Inf")
    return exemplars
