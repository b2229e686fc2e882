"""How each federated baseline of a phase builds its model (docs/baselines.md).

- ``federated_retrain``: FedAvg from scratch without the forget sets, as many rounds as the original had;
- ``federated_finetune``: FedAvg rounds on retain data from the original;
- ``federaser``: the original's training replayed from stored updates (``server/federaser.py``);
- ``pga``: projected gradient ascent on the requesters, then FedAvg rounds (``pga`` below).

Each returns an ``Anchor``; the phase (``server/unlearning_phase.py``) times and meters every one
alone, then audits and judges it with the same gate as the unlearned model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from fedunlearn.common.scenario import BaselinePlan, UnlearningPlan
from fedunlearn.common.unlearning.projected_ascent import PROJECTED_ASCENT
from fedunlearn.server.aggregate import State
from fedunlearn.server.federation import Federation

__all__ = ["Anchor", "UnlearningRound", "fedavg_rounds", "pga"]

# one unlearning round of the phase, run with the given method plan from the given model
UnlearningRound = Callable[[UnlearningPlan, State], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Anchor:
    """A baseline's model, the rounds it took and the bytes the server had to keep to build it."""

    state: dict[str, torch.Tensor]
    rounds: int
    storage_bytes: int = 0


def fedavg_rounds(fed: Federation, start: State, rounds: int, nodes: Sequence[int]) -> Anchor:
    """``rounds`` FedAvg rounds on the ``nodes``' retain data from ``start``."""
    state = dict(start)
    for round_ in range(1, rounds + 1):
        state = fed.train_round(state, round_, nodes)
    return Anchor(state, rounds)


def pga(fed: Federation, original: State, nodes: Sequence[int], plan: BaselinePlan, unlearning: UnlearningPlan,
        unlearning_round: UnlearningRound) -> Anchor:
    """Halimi et al. (2022): each requester ascends its forget set's loss inside a ball around the original
    (common/unlearning/projected_ascent.py), in one round that the server runs and combines like the phase's
    own unlearning rounds (``unlearning_round``: each step bounded and added to the round's FedAvg training,
    server/aggregate.py); then ``pga_finetune_rounds`` FedAvg rounds on retain data with every node, as the
    paper goes on training without the target client."""
    # the phase's unlearning round, asked for another method with its own parameters (same bound, same budget),
    # with every node training beside the ascent as in the paper, whatever the phase's own rounds do
    ascent = replace(unlearning, method=PROJECTED_ASCENT, params=plan.pga_params(), train_beside=True)
    ascended = unlearning_round(ascent, original)
    tuned = fedavg_rounds(fed, ascended, plan.pga_finetune_rounds, nodes)
    return Anchor(tuned.state, 1 + tuned.rounds)
