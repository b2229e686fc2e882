"""The audit's reference models: trained once per run by the server, on data no client holds.

LiRA and RMIA judge each forget sample against models that never saw it. Two
ways to get such models in a federation were considered: reference
federations in which every client puts each sample into half of them (LiRA's
design, K extra federated trainings, and the references would then hold the
very samples a client asks to delete), or offline references the server trains
on public data. We use offline references: no client data reaches them (so
nothing about a forget set outlives its commit), they cost K centralised
trainings paid once before the first round, and they serve every request and
every unlearning round of the run. ``docs/audit.md`` has the power measurement
behind the choice.

Each reference trains on its own random half-sized draw of the public pool, so
the spread between references reflects data sampling as well as seeds, which
is the spread LiRA's Gaussian models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from flwr.app import ConfigRecord, RecordDict

from fedunlearn.common import protocol as P
from fedunlearn.common.audit.exemplars import Exemplars
from fedunlearn.common.audit.signals import reference_statistic
from fedunlearn.common.checkpoint import states_sha256
from fedunlearn.common.data.splits import federation_pool
from fedunlearn.common.data.tensors import DatasetBundle, LabeledData
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import ModelSpec, build_model, model_with_weights, weights_of
from fedunlearn.common.records import state_arrays
from fedunlearn.common.scenario import Scenario
from fedunlearn.common.training import TrainConfig, train
from fedunlearn.server.aggregate import State

__all__ = ["ReferenceModels", "calibration_content", "lent_exemplars", "scenario_references", "train_references"]

MAX_DEFAULT_EPOCHS = 20
MAX_CLASS_EXEMPLARS = 500  # test images lent per class phase: enough for the gate's AUC, small on the wire


@dataclass(frozen=True)
class ReferenceModels:
    """K trained reference states, their digest (the name nodes keep their statistics under) and
    what they cost."""

    states: tuple[State, ...]
    digest: str
    train_size: int
    epochs: int
    seconds: float

    def __len__(self) -> int:
        return len(self.states)


def train_references(spec: ModelSpec, public: LabeledData, recipe: TrainConfig, *, count: int, size: int,
                     seed: int, device: torch.device) -> ReferenceModels:
    """``count`` models of ``spec``, each trained with ``recipe`` on ``size`` samples drawn from ``public``
    (at most half of it, so no two references see the same data)."""
    if count < 2:
        raise ConfigError(f"[audit].reference_models must be >= 2 (LiRA estimates their spread), got {count}")
    if len(public) < 4:
        raise ConfigError(
            f"the reference models need data no client holds, but only {len(public)} samples are left: "
            "set [data].train_size below the dataset's training split, or decide with population attacks "
            "([gate].attacks = [\"loss\"], which are weak)")
    size = max(1, min(size, len(public) // 2))
    started = time.perf_counter()
    states = []
    for k in range(count):
        generator = torch.Generator().manual_seed(seed * 1_000 + k)
        draw = public.subset(torch.randperm(len(public), generator=generator)[:size])
        model = build_model(spec, seed=seed * 1_000 + k)
        train(model, draw, recipe, device=device, generator=generator)
        states.append(weights_of(model))
    return ReferenceModels(states=tuple(states), digest=states_sha256(states), train_size=size,
                           epochs=recipe.epochs, seconds=time.perf_counter() - started)


def calibration_content(references: ReferenceModels, config: ConfigRecord) -> RecordDict:
    """The ``evaluate.calibrate`` message: every reference's arrays and the usual instructions."""
    content = RecordDict({P.CONFIG: config})
    for k, state in enumerate(references.states):
        content[f"{P.REFERENCE_PREFIX}{k}"] = state_arrays(state)
    return content


def scenario_references(scenario: Scenario, spec: ModelSpec, bundle: DatasetBundle,
                        device: torch.device) -> ReferenceModels | None:
    """The references a scenario's gate needs (None when it decides with population attacks only), trained
    on the part of the dataset's training split that the federation's partitions do not hold."""
    if not scenario.gate.needs_references:
        return None
    pool, public = federation_pool(bundle.train, scenario.data.train_size, scenario.seed)
    plan, fed = scenario.audit, scenario.federation
    epochs = plan.reference_epochs or min(fed.rounds * fed.local_epochs, MAX_DEFAULT_EPOCHS)
    size = plan.reference_size or round(len(pool) * (1.0 - scenario.data.holdout_fraction))
    recipe = TrainConfig(epochs=epochs, batch_size=fed.batch_size, lr=fed.lr, optimizer=fed.optimizer,  # type: ignore[arg-type]
                         schedule="constant")
    return train_references(spec, public, recipe, count=plan.reference_models, size=size, seed=scenario.seed,
                            device=device)


def lent_exemplars(test: LabeledData, references: ReferenceModels | None, spec: ModelSpec, *,
                   classes: tuple[int, ...] | None, limit: int, seed: int, device: torch.device) -> Exemplars:
    """Test images (of ``classes`` only, when given; at most ``limit``, drawn with ``seed``) and, given references,
    their statistics: the non-members the server lends an audit (``common.audit.exemplars``)."""
    pool = test if classes is None else test.where_classes(classes, keep=True)
    if len(pool) > limit:
        pool = pool.subset(torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:limit])
    if references is None:
        return Exemplars(pool, None)
    models = [model_with_weights(spec, state) for state in references.states]
    return Exemplars(pool, reference_statistic(models, pool, device=device))
