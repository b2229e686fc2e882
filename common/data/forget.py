"""Forget-set selectors: which training samples a scenario asks to unlearn.

Written as short strings in scenario files and on the command line
(``random:0.1``, ``class:3``, ``ids:3,17,99``) and checked against the data
before any training starts, so a bad request fails in seconds, not after an
hour of federated rounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError, DataError

__all__ = ["ForgetKind", "ForgetSpec", "parse_forget_spec", "select_forget_ids"]

ForgetKind = Literal["random", "class", "ids"]
_FORMS = (
    "random:<fraction> (e.g. random:0.1), class:<k> (e.g. class:3) or ids:<id>,<id>,... (e.g. ids:3,17,99)"
)
_SHOWN_IDS = 5  # how many unknown ids an error message lists


@dataclass(frozen=True)
class ForgetSpec:
    """A validated selector; exactly the field of its kind is set.

    fraction: share of the training set drawn at random, strictly in (0, 1)
    class_id: the class whose every training sample is forgotten
    ids:      explicit sample ids, distinct and >= 0
    """

    kind: ForgetKind
    fraction: float | None = None
    class_id: int | None = None
    ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        checks = {"random": self._check_fraction, "class": self._check_class, "ids": self._check_ids}
        if self.kind not in checks:
            raise ConfigError(f"unknown forget selector kind {self.kind!r}; write {_FORMS}")
        set_fields = [
            name for name in ("fraction", "class_id", "ids") if getattr(self, name) not in (None, ())
        ]
        if len(set_fields) != 1:
            raise ConfigError(
                f"forget selector kind {self.kind!r} takes exactly one value, got {set_fields or 'none'}"
            )
        checks[self.kind]()

    def _check_fraction(self) -> None:
        f = float(self.fraction or 0.0)
        if not (math.isfinite(f) and 0.0 < f < 1.0):
            raise ConfigError(
                f"random:{self.fraction} needs a fraction strictly between 0 and 1; e.g. random:0.1"
            )

    def _check_class(self) -> None:
        if self.class_id is None or self.class_id < 0:
            raise ConfigError(f"class:{self.class_id} needs a class index >= 0; e.g. class:3")

    def _check_ids(self) -> None:
        negative = [i for i in self.ids if i < 0]
        if negative:
            raise ConfigError(f"forget ids must be sample ids >= 0, got {negative[:_SHOWN_IDS]}; remove them")
        repeated = sorted({i for i in self.ids if self.ids.count(i) > 1})
        if repeated:
            raise ConfigError(f"forget ids list {repeated[:_SHOWN_IDS]} more than once; list each id once")

    @property
    def granularity(self) -> Literal["class", "sample"]:
        """Class forgetting removes a whole class everywhere; the other kinds remove single samples."""
        return "class" if self.kind == "class" else "sample"

    @property
    def forgotten_classes(self) -> tuple[int, ...]:
        return (self.class_id,) if self.kind == "class" and self.class_id is not None else ()

    def __str__(self) -> str:
        if self.kind == "random":
            return f"random:{self.fraction:g}"
        if self.kind == "class":
            return f"class:{self.class_id}"
        return "ids:" + ",".join(str(i) for i in self.ids)


def parse_forget_spec(text: str) -> ForgetSpec:
    """``random:<fraction>``, ``class:<k>`` or ``ids:<id>,<id>,...`` -> a validated ForgetSpec."""
    kind, sep, value = text.strip().partition(":")
    value = value.strip()
    if not sep or not value or kind not in get_args(ForgetKind):
        raise ConfigError(f"forget selector {text!r} is malformed; write {_FORMS}")
    try:
        if kind == "random":
            return ForgetSpec("random", fraction=float(value))
        if kind == "class":
            return ForgetSpec("class", class_id=int(value))
        return ForgetSpec("ids", ids=tuple(int(token) for token in value.split(",")))
    except ValueError:
        raise ConfigError(
            f"forget selector {text!r} has a malformed value {value!r}; write {_FORMS}"
        ) from None


def select_forget_ids(spec: ForgetSpec, train: LabeledData, *, num_classes: int, seed: int) -> torch.Tensor:
    """Sorted int64 sample ids of ``train`` that ``spec`` selects; never empty, never all of ``train``."""
    if len(train) == 0:
        raise DataError("the training set is empty, so there is nothing to forget; check the data partition")
    if spec.kind == "random":
        chosen = _random_ids(spec, train, seed)
    elif spec.kind == "class":
        chosen = _class_ids(spec, train, num_classes)
    else:
        chosen = _explicit_ids(spec, train)
    if len(chosen) >= len(train):
        raise DataError(
            f"forget selector {spec} selects all {len(train)} training samples, leaving nothing to retain; "
            "select fewer (a lower fraction, another class, fewer ids)"
        )
    return torch.sort(chosen).values


def _random_ids(spec: ForgetSpec, train: LabeledData, seed: int) -> torch.Tensor:
    n = len(train)
    count = round(float(spec.fraction or 0.0) * n)
    if count == 0:
        raise DataError(
            f"forget selector {spec} selects no sample of the {n} training samples; "
            f"use a fraction of at least {1.0 / n:.3g}"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return train.ids[order[:count]].to(torch.int64)


def _class_ids(spec: ForgetSpec, train: LabeledData, num_classes: int) -> torch.Tensor:
    k = int(spec.class_id or 0)
    if not 0 <= k < num_classes:
        raise ConfigError(
            f"forget selector class:{k} is out of range: the dataset has {num_classes} classes "
            f"(0..{num_classes - 1}); pick one of them"
        )
    chosen = train.ids[train.y == k].to(torch.int64)
    if len(chosen) == 0:
        present = ", ".join(str(c) for c in torch.unique(train.y).tolist())
        raise DataError(f"forget selector class:{k} matches no training sample; classes present: {present}")
    return chosen


def _explicit_ids(spec: ForgetSpec, train: LabeledData) -> torch.Tensor:
    chosen = torch.tensor(spec.ids, dtype=torch.int64)
    unknown = chosen[~torch.isin(chosen, train.ids)]
    if len(unknown) > 0:
        shown = ", ".join(str(i) for i in unknown[:_SHOWN_IDS].tolist())
        more = f" (and {len(unknown) - _SHOWN_IDS} more)" if len(unknown) > _SHOWN_IDS else ""
        raise DataError(
            f"{len(unknown)} of the {len(chosen)} forget ids are not in this training set: {shown}{more}; "
            "use sample ids of this node's training split"
        )
    return chosen
