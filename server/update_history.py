"""The clients' training updates the server keeps for FedEraser, and what keeping them costs.

FedEraser (``server/federaser.py``) rebuilds a model from updates stored during
training: every ``interval``-th round (1, 1 + interval, 1 + 2 interval, ...) each
node's update (the model it returned minus the global model it started from) and,
once, the global model round 1 started from, the rebuild's starting point. The
global models of the later stored rounds are not kept: the rebuild never reads
them. Everything stays in memory; ``storage_bytes`` is the price a server pays
to be able to run FedEraser at all, reported beside its time and traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from fedunlearn.server.aggregate import State

__all__ = ["StoredRound", "UpdateHistory", "difference"]


def difference(state: State, base: State) -> dict[str, torch.Tensor]:
    """``state - base`` for every float array (integer buffers such as batch counters are not updates)."""
    return {k: (state[k] - v).detach().clone() for k, v in base.items() if v.is_floating_point()}


@dataclass(frozen=True)
class StoredRound:
    round: int
    updates: Mapping[int, dict[str, torch.Tensor]]  # node id -> its update's float arrays


@dataclass
class UpdateHistory:
    start: dict[str, torch.Tensor] | None = None  # the global model the first stored round started from
    rounds: list[StoredRound] = field(default_factory=list)

    def keep(self, round_: int, interval: int, global_state: State, returned: Mapping[int, State]) -> None:
        """Store training round ``round_`` if it is due (``interval`` 0: never): ``returned`` maps each
        node that sent a valid update to its model, ``global_state`` is the model they started from."""
        if interval == 0 or (round_ - 1) % interval:
            return
        if self.start is None:
            self.start = {k: v.detach().clone() for k, v in global_state.items()}
        self.rounds.append(StoredRound(round_, {node: difference(state, global_state)
                                                for node, state in returned.items()}))

    @property
    def storage_bytes(self) -> int:
        """Bytes held: the starting model and every stored update."""
        tensors = [*(self.start or {}).values(),
                   *(t for stored in self.rounds for update in stored.updates.values() for t in update.values())]
        return sum(t.numel() * t.element_size() for t in tensors)
