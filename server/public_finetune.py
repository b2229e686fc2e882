"""The server's fine-tuning of each unlearning round's model on images no client holds.

A requester's ReMI step hides its forget set, but it also fits the requester's few local samples, and on a
memorising federation the sum of those steps costs the global model several points of accuracy. A repair
round on the clients' data wins the accuracy back and the leak with it; sizing the steps down keeps the
accuracy and the leak (docs/federation.md). A short fine-tune on public images, which hold no forget
sample, gives the accuracy back without teaching the forget set again. The gate still judges the result.

In simulation the images are the public part of the training split; a deployment's server loads the same
dataset it trains the reference models on. They never overlap the validation images that size the steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from fedunlearn.common.data.tensors import DatasetBundle, LabeledData
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import ModelSpec, model_with_weights, weights_of
from fedunlearn.common.scenario import Scenario
from fedunlearn.common.stem_features import StemCache
from fedunlearn.common.training import TrainConfig, train
from fedunlearn.server.aggregate import State
from fedunlearn.server.evaluation import VALIDATION_SIZE, public_images

__all__ = ["PublicFinetune", "public_finetune"]


@dataclass(frozen=True)
class PublicFinetune:
    """scope "all" trains the whole model; "top" only neck and head, on the images' stem features, which
    stay the same while the phase leaves the stem alone (``common/stem_features.py``)."""

    spec: ModelSpec
    images: LabeledData
    recipe: TrainConfig
    device: torch.device
    seed: int
    scope: Literal["all", "top"] = "all"
    _stems: StemCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_stems", StemCache(self.images, self.device))

    def __call__(self, state: State, round_seed: int) -> dict[str, torch.Tensor]:
        """``state`` fine-tuned on the public images (batch order from the run's seed and the round's)."""
        model = model_with_weights(self.spec, state)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + round_seed)
        if self.scope == "top":
            train(model.top(), self._stems.features(model), self.recipe, device=self.device, generator=generator)
        else:
            train(model, self.images, self.recipe, device=self.device, generator=generator)
        return weights_of(model)


def public_finetune(scenario: Scenario, spec: ModelSpec, bundle: DatasetBundle,
                    device: torch.device) -> PublicFinetune | None:
    """The scenario's public fine-tuning (None when ``[unlearning].public_finetune_images`` is not set); its
    images come after the validation images when the phase also sizes its steps."""
    plan = scenario.unlearning
    wanted = plan.public_finetune_images
    if wanted is None:
        return None
    public = public_images(scenario, bundle, "public_finetune_images")
    start = VALIDATION_SIZE if plan.searches_steps else 0
    if len(public) - start < wanted:
        raise ConfigError(f"[unlearning].public_finetune_images = {wanted}, but only {max(len(public) - start, 0)} "
                          f"images no client holds are left{' beside the validation images' if start else ''}: "
                          "ask for fewer, or lower [data].train_size")
    return PublicFinetune(spec, public.subset(torch.arange(start, start + wanted)), plan.public_finetune_recipe(),
                          device, scenario.seed, plan.public_finetune_scope)
