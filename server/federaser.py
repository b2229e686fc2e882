"""FedEraser (Liu, Ma, Yang, Wang, Liu, IWQoS 2021): a model rebuilt from the updates stored during training.

Retraining from scratch pays for every round again. FedEraser replays only the
rounds the server stored (``server/update_history.py``), starting from the model
round 1 started from. At each stored round every node that still holds data
trains the rebuilt model briefly (the calibration: ``federaser_calibration_ratio``
of the local epochs, rounded up to whole epochs), and its calibrated update takes
the *length* of that fresh update and the *direction* of the update it sent in
the original round, layer by layer (``calibrated_update``). The stored directions
carry what the long original training learnt; the fresh lengths, measured on the
rebuilt model and the data that remains, say how far to step. The calibrated
updates are averaged with FedAvg weights (retain examples) and the rebuilt model
takes the step. Rounds between stored ones are skipped, and calibration runs
fewer epochs: that is where the speed-up over retraining comes from.

FedEraser was designed to forget whole clients: a leaving client holds no data,
is not asked, and its stored updates simply drop out, as in the paper. The same
loop also serves sample and class requests here, less faithfully: a requester's
stored directions were computed with its forget samples in its training set, and
only their lengths come from its calibration, which uses its retain data alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch

from fedunlearn.common.errors import FedUnlearnError
from fedunlearn.common.scenario import BaselinePlan
from fedunlearn.common.training import TrainConfig
from fedunlearn.server.aggregate import State, fedavg
from fedunlearn.server.baselines import Anchor
from fedunlearn.server.federation import Federation
from fedunlearn.server.update_history import difference

__all__ = ["calibrated_update", "calibration_epochs", "calibration_recipe", "federaser"]


def calibrated_update(stored: State, fresh: State) -> dict[str, torch.Tensor]:
    """FedEraser's rule, per array (a "layer"): ``||fresh|| * stored / ||stored||``. An array whose
    stored update is zero has no direction and stays where it is."""
    calibrated = {}
    for key, direction in stored.items():
        length = float(direction.double().norm())
        scale = float(fresh[key].double().norm()) / length if length > 0 else 0.0
        calibrated[key] = direction * scale
    return calibrated


def calibration_epochs(local_epochs: int, ratio: float) -> int:
    """Whole local epochs of a calibration run: ``ratio`` of the original's, rounded up, at least one."""
    return max(1, math.ceil(ratio * local_epochs - 1e-9))


def _stepped(state: State, update: State, fresh: State) -> dict[str, torch.Tensor]:
    """``state`` plus a calibrated update on its float arrays; integer buffers as the calibration left them."""
    return {k: (v + update[k]).to(v.dtype) if k in update else fresh[k].clone() for k, v in state.items()}


def calibration_recipe(local: TrainConfig, plan: BaselinePlan) -> TrainConfig:
    """The nodes' local recipe with the calibration's share of its epochs."""
    return replace(local, epochs=calibration_epochs(local.epochs, plan.federaser_calibration_ratio))


def federaser(fed: Federation, nodes: Sequence[int], recipe: TrainConfig) -> Anchor:
    """The model rebuilt from every stored round by the ``nodes`` that still hold data, each calibrating with
    ``recipe``, and the history's storage. A stored round no node can calibrate is skipped and reported."""
    history = fed.history
    if history.start is None:
        raise FedUnlearnError("FedEraser needs at least one stored training round ([baselines].federaser_interval)")
    state, replayed = dict(history.start), 0
    for stored in history.rounds:
        asked = [n for n in nodes if n in stored.updates]
        fresh = fed.train_updates(state, stored.round, asked, label="federaser", recipe=recipe) if asked else []
        if not fresh:
            fed.failures.append(f"federaser round {stored.round}: no node could calibrate; the round was skipped")
            continue
        state = fedavg([(_stepped(state, calibrated_update(stored.updates[u.node_id], difference(u.state, state)),
                                  u.state), u.weight) for u in fresh])
        replayed += 1
    return Anchor(state, replayed, history.storage_bytes)
