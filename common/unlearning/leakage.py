"""Privacy-leakage approximators: differentiable stand-ins for a membership attack.

ReMI adds ``lambda_mia * leakage`` to its loss. An approximator is fitted on
the current model's behaviour on members (retain samples) versus non-members
(the reference set), frozen, and then scores how much more "member-like" a
forget batch looks than a reference batch. The score is one-sided (zero once
the forget batch looks no more member-like than the reference) so the loss
never pushes forget samples past non-members: overshooting is a leak too.

New approximators plug in with ``@LEAKAGE.register(name)`` on a class that
takes ``(num_classes, seed)`` and implements ``fit`` and ``leakage``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.models import Classifier
from fedunlearn.common.registry import Registry

__all__ = [
    "LEAKAGE",
    "LeakageApproximator",
    "Outputs",
    "forward_outputs",
    "gaussian_kl",
    "membership_statistic",
]


@dataclass(frozen=True)
class Outputs:
    """One batch seen through the model: what every approximator may read.

    embeddings (N, D) penultimate activations, logits (N, K), labels (N,).
    ReMI computes them in one forward pass shared by all loss terms.
    """

    embeddings: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor

    def detach(self) -> Outputs:
        return Outputs(self.embeddings.detach(), self.logits.detach(), self.labels)


def forward_outputs(model: Classifier, x: torch.Tensor, labels: torch.Tensor) -> Outputs:
    embeddings = model.embed(x)
    return Outputs(embeddings, model.head(embeddings), labels)


def membership_statistic(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logit-scaled confidence log p_y - log(1 - p_y), computed as z_y - logsumexp_{j!=y} z_j.

    logits (N, K), labels (N,) -> (N,). Stable where p_y is within 1e-12 of 1,
    which is exactly where memorised training samples sit.
    """
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return own - torch.logsumexp(others, dim=1)


def gaussian_kl(sample: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """KL( N(mean, var of ``sample``) || N(mean, var of ``target``) ), closed form.

    Both (N,). ``eps`` keeps a collapsed spread from dividing by zero.
    """
    mu_s, sd_s = sample.mean(), sample.std(unbiased=False) + eps
    mu_t, sd_t = target.mean(), target.std(unbiased=False) + eps
    return torch.log(sd_t / sd_s) + (sd_s**2 + (mu_s - mu_t) ** 2) / (2 * sd_t**2) - 0.5


class LeakageApproximator(Protocol):
    def fit(self, model: Classifier, members: LabeledData, nonmembers: LabeledData) -> None:
        """(Re)train on the model as it is now; afterwards the approximator is frozen."""

    def leakage(self, forget: Outputs, reference: Outputs) -> torch.Tensor:
        """Differentiable scalar >= 0: how much more member-like the forget batch looks.

        ``reference`` arrives detached: non-members are the target, not something to move.
        """


LeakageFactory = Callable[[int, int], LeakageApproximator]
LEAKAGE: Registry[LeakageFactory] = Registry("leakage approximator")


def _output_features(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, K) logits -> (N, K + 1): descending log-probabilities and the membership statistic.

    Log-probabilities rather than probabilities keep gradients alive on
    saturated (memorised) samples.
    """
    sorted_log_probs = torch.sort(F.log_softmax(logits, dim=1), dim=1, descending=True).values
    stat = membership_statistic(logits, labels)[:, None]
    return torch.cat([sorted_log_probs.clamp(min=-50.0), stat.clamp(-50.0, 50.0)], dim=1)


class _AttackNetApproximator:
    """Shared machinery: a small MLP attack on per-sample features of the model.

    Subclasses choose the features (outputs or activations). The MLP sees
    standardised features; standardisation is fitted with the attack.
    """

    fit_steps = 150
    fit_batch = 256
    max_fit_samples = 1000

    def __init__(self, num_classes: int, seed: int) -> None:
        self.num_classes = num_classes
        self.generator = torch.Generator().manual_seed(seed)
        self.attack: nn.Module | None = None
        self.shift = torch.zeros(1)
        self.scale = torch.ones(1)

    def features(self, outputs: Outputs) -> torch.Tensor:
        raise NotImplementedError

    def _cap(self, data: LabeledData) -> LabeledData:
        if len(data) <= self.max_fit_samples:
            return data
        return data.subset(torch.randperm(len(data), generator=self.generator)[: self.max_fit_samples])

    def _all_features(self, model: Classifier, data: LabeledData) -> torch.Tensor:
        device = next(model.parameters()).device
        with torch.no_grad():
            chunks = [
                self.features(forward_outputs(model, x.to(device), y.to(device))).cpu()
                for x, y in data.batches(512)
            ]
        return torch.cat(chunks)

    def fit(self, model: Classifier, members: LabeledData, nonmembers: LabeledData) -> None:
        was_training = model.training
        model.eval()
        inside = self._all_features(model, self._cap(members))
        outside = self._all_features(model, self._cap(nonmembers))
        model.train(was_training)
        both = torch.cat([inside, outside])
        self.shift, self.scale = both.mean(0), both.std(0) + 1e-4
        inputs = (both - self.shift) / self.scale
        targets = torch.cat([torch.ones(len(inside)), torch.zeros(len(outside))])
        weights = torch.cat([
            torch.full((len(inside),), 0.5 / len(inside)),
            torch.full((len(outside),), 0.5 / len(outside)),
        ])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))
            attack = nn.Sequential(nn.Linear(inputs.shape[1], 64), nn.ReLU(), nn.Linear(64, 1))
        optimizer = torch.optim.Adam(attack.parameters(), lr=3e-3)
        for _ in range(self.fit_steps):
            idx = torch.multinomial(weights, self.fit_batch, replacement=True, generator=self.generator)
            loss = F.binary_cross_entropy_with_logits(attack(inputs[idx]).squeeze(1), targets[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        attack.requires_grad_(False)
        device = next(model.parameters()).device
        self.attack = attack.to(device)
        self.shift, self.scale = self.shift.to(device), self.scale.to(device)

    def _member_probability(self, outputs: Outputs) -> torch.Tensor:
        if self.attack is None:
            raise RuntimeError("fit() must run before leakage()")
        z = (self.features(outputs) - self.shift) / self.scale
        return torch.sigmoid(self.attack(z).squeeze(1))

    def leakage(self, forget: Outputs, reference: Outputs) -> torch.Tensor:
        gap = self._member_probability(forget).mean() - self._member_probability(reference).mean()
        return F.relu(gap)


@LEAKAGE.register("shadow")
class ShadowAttackApproximator(_AttackNetApproximator):
    """Attack network on the model's outputs: sorted log-softmax and the membership statistic."""

    def features(self, outputs: Outputs) -> torch.Tensor:
        return _output_features(outputs.logits, outputs.labels)


@LEAKAGE.register("activation")
class ActivationAttackApproximator(_AttackNetApproximator):
    """Attack network on penultimate activations ("activation values") plus the one-hot label,
    so that what the body of the network retains about a sample is penalised, not only its output."""

    def features(self, outputs: Outputs) -> torch.Tensor:
        return torch.cat([outputs.embeddings, F.one_hot(outputs.labels, self.num_classes).float()], dim=1)


@LEAKAGE.register("loss-stats")
class LossStatisticsApproximator:
    """No network: Gaussian KL between the per-sample log-loss of forget and reference batches.

    One-sided: only a forget batch whose losses sit below the reference's counts as
    leakage. Nothing to fit, so it is the cheapest approximator.
    """

    def __init__(self, num_classes: int, seed: int) -> None:
        self.num_classes = num_classes

    def fit(self, model: Classifier, members: LabeledData, nonmembers: LabeledData) -> None:
        return None

    def leakage(self, forget: Outputs, reference: Outputs) -> torch.Tensor:
        forget_loss = torch.log(F.cross_entropy(forget.logits, forget.labels, reduction="none") + 1e-8)
        reference_loss = torch.log(
            F.cross_entropy(reference.logits, reference.labels, reduction="none") + 1e-8
        )
        if forget_loss.mean() >= reference_loss.mean():
            return forget_loss.sum() * 0.0
        return gaussian_kl(forget_loss, reference_loss)
