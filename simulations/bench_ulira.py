"""``fedunlearn bench --ulira-shadows S``: U-LiRA over shadow splits, unlearned and retrained like the bench.

The bench's own audits compare a forget set with test samples on one model.
U-LiRA (Hayes et al. 2024, ``common.audit.ulira``) instead asks, per sample,
whether the method's model can be told from the model retrained without it,
which needs many trainings of both. Per seed:

- targets: 2m samples of the seed's training pool, m being the bench's forget
  fraction of a shadow's training set (half the pool);
- S shadows in complementary pairs: one trains on a random half of the pool
  holding exactly half of the targets, its partner on the other half, so every
  shadow holds m targets and every target sits in S/2 shadows;
- each shadow trains an original on its half (the bench's recipe), forgets the
  m targets it holds (its F_s: the bench's fraction, drawn at random by the
  split) with every method, and retrains without them under another seed
  (the methods' task is built as the bench's, with the same expectation: for
  a target, only bench references that never trained on it inform it);
- each target's statistic φ = logit confidence under every unlearned model and
  every retrained one feeds the leave-one-shadow-out likelihood-ratio test.

``retrain`` goes through the same procedure, so its accuracy is the floor two
independent retrainings reach (about 0.5); ``original`` (no unlearning) is the
ceiling. Forgetting every target a shadow holds, rather than a subset, gives
each target the most forgotten shadows S splits allow.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedunlearn.common.audit.signals import compute_signals
from fedunlearn.common.audit.ulira import ULiraResult, ulira_accuracy
from fedunlearn.common.data.tensors import LabeledData, concat
from fedunlearn.common.device import resolve_device
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import Classifier
from fedunlearn.common.unlearning import run_method
from fedunlearn.simulations.bench import BenchConfig, Progress, SeedRun, Stream, derived_seed, train_model

__all__ = ["SeedULira", "ShadowSplits", "run_ulira", "shadow_forget_size", "shadow_splits"]


@dataclass(frozen=True)
class ShadowSplits:
    """targets: (T,) pool positions of the target samples; train: (S, P) bool, shadow s trains on pool sample p."""

    targets: torch.Tensor
    train: torch.Tensor

    @property
    def forgotten(self) -> np.ndarray:
        """(S, T) bool: shadow s trained on target t, so forgot it."""
        return self.train[:, self.targets].numpy()


@dataclass(frozen=True)
class SeedULira:
    """One seed's U-LiRA: per model name ("original" and every method) the test's result.

    forget_size: m, the targets each shadow forgets; train_size: a shadow's training set (about P/2).
    seconds: every shadow's training, unlearning and retraining together.
    """

    seed: int
    targets: int
    forget_size: int
    train_size: int
    seconds: float
    results: Mapping[str, ULiraResult]


def shadow_forget_size(fraction: float, pool_size: int) -> int:
    """m: the bench's forget fraction of a shadow's training set (half the pool), at least one sample."""
    size = round(fraction * (pool_size // 2))
    if size < 1:
        raise ConfigError(f"a U-LiRA shadow trains on {pool_size // 2} samples, and random:{fraction:g} of them "
                          "is no sample; raise the forget fraction or the training set size")
    return size


def shadow_splits(pool_size: int, forget_size: int, shadows: int, generator: torch.Generator) -> ShadowSplits:
    """2·``forget_size`` random targets and ``shadows`` half-pool training sets in complementary pairs
    (an odd count leaves the last one unpaired), each holding exactly ``forget_size`` targets."""
    order = torch.randperm(pool_size, generator=generator)
    targets, others = order[: 2 * forget_size], order[2 * forget_size:]
    train = torch.zeros((shadows, pool_size), dtype=torch.bool)
    for first in range(0, shadows, 2):
        half = torch.zeros(pool_size, dtype=torch.bool)
        half[targets[torch.randperm(len(targets), generator=generator)[:forget_size]]] = True
        half[others[torch.randperm(len(others), generator=generator)[: len(others) // 2]]] = True
        train[first] = half
        if first + 1 < shadows:
            train[first + 1] = ~half
    return ShadowSplits(torch.sort(targets).values, train)


def _statistic(model: Classifier, targets: LabeledData, device: torch.device) -> np.ndarray:
    return compute_signals(model, targets, device=device).logit_confidence


def run_ulira(config: BenchConfig, run: SeedRun, params: Mapping[str, Any], progress: Progress) -> SeedULira:
    """Train, unlearn (every method and variant of ``config``) and retrain ``config.ulira_shadows`` shadows of one seed,
    then score every method, and the do-nothing original, against the retrained shadows."""
    data, shadows, device = run.data, config.ulira_shadows, resolve_device(config.device)
    pool = concat(data.retain, data.forget)
    forget_size = shadow_forget_size(float(data.forget_spec.fraction or 0.0), len(pool))
    splits = shadow_splits(len(pool), forget_size, shadows,
                           torch.Generator().manual_seed(derived_seed(data.seed, Stream.ULIRA_SPLITS, 0)))
    targets = pool.subset(splits.targets)
    names = ("original", *config.lineup)
    unlearned = {name: np.zeros((shadows, len(targets))) for name in names}
    retrained = np.zeros((shadows, len(targets)))
    started = time.perf_counter()
    for s in range(shadows):
        progress(f"seed {data.seed}: U-LiRA shadow {s + 1}/{shadows}")
        shadow = pool.subset(splits.train[s])
        is_target = torch.isin(shadow.ids, targets.ids)
        forget, retain = shadow.subset(is_target), shadow.subset(~is_target)
        seed = derived_seed(data.seed, Stream.SHADOW, s)
        original, _ = train_model(data.spec, shadow, config.recipe, device, seed)
        task = data.task(original, retain=retain, forget=forget, recipe=config.recipe, device=device, seed=seed)
        unlearned["original"][s] = _statistic(original, targets, device)
        for name, method in config.lineup.items():
            unlearned[name][s] = _statistic(run_method(method, task, params[name]).model, targets, device)
        yardstick, _ = train_model(data.spec, retain, config.recipe, device,
                                   derived_seed(data.seed, Stream.SHADOW_RETRAIN, s))
        retrained[s] = _statistic(yardstick, targets, device)
    forgotten = splits.forgotten
    return SeedULira(
        seed=data.seed, targets=len(targets), forget_size=forget_size, train_size=int(splits.train[0].sum()),
        seconds=time.perf_counter() - started,
        results={name: ulira_accuracy(values, retrained, forgotten) for name, values in unlearned.items()},
    )
