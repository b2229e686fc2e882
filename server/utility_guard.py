"""How much of an unlearning round's step the global model takes.

Each requester's ReMI checks utility on its own hold-out, a few dozen samples,
where a drop of several points is noise; two such steps summed cost
fashion-mnist-memorise 7.5 points of test accuracy in one round, and later
rounds, each judged against its own start, kept sliding. The server therefore
measures each candidate on its validation split (data no client holds, never
the test split the gate judges on) against the phase's original model, and
takes the largest share of the step that stays within ``[unlearning].utility_drop``.
Share 0 makes the round plain FedAvg on retain data, which repairs utility
before the next unlearning round tries again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from server.aggregate import State, train_and_forget_update
from server.evaluation import CentralEvaluator

__all__ = ["STEP_SHARES", "UtilityGuard"]

STEP_SHARES = (1.0, 0.5, 0.25, 0.125, 0.0)


@dataclass(frozen=True)
class UtilityGuard:
    """The phase's original validation accuracy (None: the server holds no validation data, and every
    step is taken in full) and the drop the unlearning steps may cost."""

    evaluator: CentralEvaluator
    forgotten_classes: tuple[int, ...]
    anchor: float | None
    allowed_drop: float

    @classmethod
    def for_phase(cls, evaluator: CentralEvaluator, original: State, forgotten_classes: tuple[int, ...],
                  allowed_drop: float) -> UtilityGuard:
        return cls(evaluator, forgotten_classes, evaluator.validation_accuracy(original, forgotten_classes),
                   allowed_drop)

    def combine(self, current: State, trained: Sequence[tuple[State, float]],
                unlearned: Sequence[tuple[State, float]], *,
                combine: Literal["mean", "sum"]) -> tuple[dict[str, torch.Tensor], float]:
        """The round's model with the largest share of the unlearning steps within the allowed drop,
        and that share."""
        shares = STEP_SHARES if self.anchor is not None and unlearned else (1.0,)
        for share in shares[:-1]:
            merged = train_and_forget_update(current, trained, unlearned, combine=combine, scale=share)
            if self._within(merged):
                return merged, share
        return train_and_forget_update(current, trained, unlearned, combine=combine, scale=shares[-1]), shares[-1]

    def _within(self, state: State) -> bool:
        accuracy = self.evaluator.validation_accuracy(state, self.forgotten_classes)
        return self.anchor is not None and accuracy is not None and self.anchor - accuracy <= self.allowed_drop
