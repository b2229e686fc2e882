"""Reference-model membership attacks: each example judged against models that never saw it.

A population threshold (``common.audit.attacks``) asks "is this loss low?", so
an easy example looks like a member and a hard member looks like a
non-member: against a well-generalising model such attacks read ~0.5 even
when the model memorised its training set. LiRA (Carlini et al. 2022) and
RMIA (Zarifzadeh et al. 2024) instead compare the audited model's output on
an example with the outputs of *reference models* trained the same way
without it, so an example's own difficulty cancels out. Unlearning audits
built this way (U-LiRA, Hayes et al. 2024) are the ones that catch inexact
methods that population attacks pass.

Everything here is a pure numpy function of per-example statistics: the
audited model's logit confidence φ = log p_y - log(1 - p_y) (``Signals.
logit_confidence``, the quantity LiRA models as Gaussian) on N samples, and
the same statistic of K reference models, (K, N), with a (K, N) mask saying
which reference trained on which sample ("IN"). The statistics come from any
backend (torch, ONNX Runtime) through ``Signals``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import log_expit, logsumexp

from fedunlearn.common.audit.normal import log_cdf, log_pdf
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.readonly import store_read_only
from fedunlearn.common.registry import Registry

__all__ = ["CALIBRATED_ATTACKS", "CalibratedAttackFn", "Calibration", "lira_scores", "rmia_scores"]

# Below this many OUT (or IN) references per example a per-example variance is too noisy to use;
# LiRA's authors fall back to one variance shared by all examples (Carlini et al., sec. VI-B).
PER_EXAMPLE_VARIANCE_MIN = 32
_STD_FLOOR = 1e-6  # a reference spread of exactly 0 (identical models) must not divide by zero


@dataclass(frozen=True, eq=False)
class Calibration:
    """K reference models' view of N samples.

    statistic: (K, N) logit confidence of reference k on sample n.
    inside: (K, N) bool, True where reference k trained on sample n. All False
        for offline references (the federation's, which never see client data).
    """

    statistic: np.ndarray
    inside: np.ndarray

    def __post_init__(self) -> None:
        statistic = np.array(self.statistic, dtype=np.float64)
        inside = np.array(self.inside, dtype=bool)
        if statistic.ndim != 2 or statistic.shape[0] < 1:
            raise ValueError(f"reference statistics must be (K, N) with K >= 1, got shape {statistic.shape}")
        if inside.shape != statistic.shape:
            raise ValueError(f"inside mask must match the statistics' shape {statistic.shape}, got {inside.shape}")
        if not np.isfinite(statistic).all():
            raise ValueError("reference statistics contain NaN or Inf")
        store_read_only(self, statistic=statistic, inside=inside)

    @classmethod
    def offline(cls, statistic: np.ndarray) -> Calibration:
        """References that trained on none of the samples."""
        return cls(statistic, np.zeros(np.shape(statistic), dtype=bool))

    @property
    def num_references(self) -> int:
        return int(self.statistic.shape[0])

    def __len__(self) -> int:
        return int(self.statistic.shape[1])

    def subset(self, index: np.ndarray) -> Calibration:
        """Columns (samples) picked by an integer index or a boolean mask."""
        return Calibration(self.statistic[:, index], self.inside[:, index])

    @property
    def has_in_models(self) -> bool:
        """Every sample is IN for at least one reference and OUT for at least one: online LiRA works."""
        return bool(self.inside.any(axis=0).all() and (~self.inside).any(axis=0).all())


def _masked_moments(values: np.ndarray, mask: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
    """(K, N) values, (K, N) mask -> per-sample mean and std over the masked references, (N,) each.

    With few references the spread is one global std (the residuals of every sample around its own
    mean, pooled), as in LiRA's small-K variant; otherwise each sample's own.
    """
    counts = mask.sum(axis=0)
    if (counts < 1).any():
        raise ConfigError(f"{int((counts < 1).sum())} samples have no {side} reference model; "
                          f"train more references (each sample needs at least one {side} model)")
    mean = np.where(mask, values, 0.0).sum(axis=0) / counts
    residual = np.where(mask, values - mean, 0.0)
    if counts.min() >= PER_EXAMPLE_VARIANCE_MIN:
        std = np.sqrt((residual**2).sum(axis=0) / (counts - 1))
    else:
        dof = int((counts - 1).sum())
        if dof < 1:
            raise ConfigError(f"LiRA needs at least 2 {side} reference models to estimate their spread, got 1")
        std = np.full(values.shape[1], np.sqrt(float((residual**2).sum()) / dof))
    return mean, np.maximum(std, _STD_FLOOR)


def lira_scores(target: np.ndarray, calibration: Calibration, *, online: bool | None = None) -> np.ndarray:
    """(N,) LiRA membership scores, higher = more likely a member.

    Offline: how far above its OUT distribution N(μ_out, σ_out²) the audited model places each
    sample, as a log one-sided p-value, log Φ((φ - μ_out) / σ_out). Online (needs IN references for
    every sample): the log likelihood ratio log N(φ; μ_in, σ_in²) - log N(φ; μ_out, σ_out²).
    ``online=None`` picks online when the calibration allows it.
    """
    phi = _target(target, calibration)
    use_online = calibration.has_in_models if online is None else online
    mu_out, sd_out = _masked_moments(calibration.statistic, ~calibration.inside, "OUT")
    if not use_online:
        return log_cdf((phi - mu_out) / sd_out)
    mu_in, sd_in = _masked_moments(calibration.statistic, calibration.inside, "IN")
    return log_pdf(phi, mu_in, sd_in) - log_pdf(phi, mu_out, sd_out)


def _log_prob(logit_confidence: np.ndarray) -> np.ndarray:
    """log p_y from the logit confidence log(p/(1-p)): exact even where p rounds to 1."""
    return np.asarray(log_expit(logit_confidence))


def _rmia_log_ratio(target: np.ndarray, calibration: Calibration, offline_a: float) -> np.ndarray:
    """(N,) log Pr(x|θ) / Pr(x), with Pr(x) the OUT references' mean probability.

    Offline, OUT references underestimate Pr(x) as an average over models half of which would have
    trained on x; RMIA's linear correction Pr(x) ≈ ((1 + a) Pr_out(x) + (1 - a)) / 2 restores it.
    """
    out = ~calibration.inside
    log_p_refs = np.where(out, _log_prob(calibration.statistic), -np.inf)
    log_mean_out = logsumexp(log_p_refs, axis=0) - np.log(out.sum(axis=0))
    if offline_a == 1.0:  # no correction (log1p(-1) would be -inf)
        return _log_prob(target) - log_mean_out
    log_marginal = np.logaddexp(np.log1p(offline_a) + log_mean_out, np.log1p(-offline_a)) - np.log(2.0)
    return _log_prob(target) - log_marginal


def rmia_scores(target: np.ndarray, calibration: Calibration, population_target: np.ndarray,
                population: Calibration, *, offline_a: float = 0.3, gamma: float = 1.0,
                target_is_population: bool = False) -> np.ndarray:
    """(N,) RMIA scores in [0, 1]: the share of population samples z that x dominates,
    Pr(x|θ)/Pr(x) > γ · Pr(z|θ)/Pr(z).

    The population is non-members from the same distribution. When the targets are the population
    itself (``target_is_population``), each is compared with the others only: with γ >= 1 a sample
    never dominates itself. Scores are shares, so they are comparable across clients with different
    populations, which raw likelihood ratios are not.
    """
    if not 0.0 <= offline_a <= 1.0:
        raise ConfigError(f"RMIA's offline a must be in [0, 1], got {offline_a}")
    if gamma < 1.0:
        raise ConfigError(f"RMIA's gamma must be >= 1, got {gamma}")
    x_ratio = _rmia_log_ratio(_target(target, calibration), calibration, offline_a)
    z_ratio = np.sort(_rmia_log_ratio(_target(population_target, population), population, offline_a))
    if z_ratio.size < 2:
        raise ConfigError(f"RMIA needs a population of at least 2 non-members, got {z_ratio.size}")
    dominated = np.searchsorted(z_ratio, x_ratio - np.log(gamma), side="left")
    return dominated / (z_ratio.size - 1 if target_is_population else z_ratio.size)


def _target(values: np.ndarray, calibration: Calibration) -> np.ndarray:
    phi = np.asarray(values, dtype=np.float64)
    if phi.shape != (len(calibration),):
        raise ValueError(f"target statistics must be ({len(calibration)},) to match the references, "
                         f"got shape {phi.shape}")
    if not np.isfinite(phi).all():
        raise ValueError("target statistics contain NaN or Inf")
    return phi


# (member φ, member calibration, non-member φ, non-member calibration) -> (member, non-member) scores
CalibratedAttackFn = Callable[[np.ndarray, Calibration, np.ndarray, Calibration], tuple[np.ndarray, np.ndarray]]

CALIBRATED_ATTACKS: Registry[CalibratedAttackFn] = Registry("reference-model attack")


@CALIBRATED_ATTACKS.register("lira")
def _lira(members: np.ndarray, member_refs: Calibration, others: np.ndarray,
          other_refs: Calibration) -> tuple[np.ndarray, np.ndarray]:
    both = Calibration(np.concatenate([member_refs.statistic, other_refs.statistic], axis=1),
                       np.concatenate([member_refs.inside, other_refs.inside], axis=1))
    scores = lira_scores(np.concatenate([members, others]), both)  # one shared variance for both groups
    return scores[: len(members)], scores[len(members):]


@CALIBRATED_ATTACKS.register("rmia")
def _rmia(members: np.ndarray, member_refs: Calibration, others: np.ndarray,
          other_refs: Calibration) -> tuple[np.ndarray, np.ndarray]:
    return (rmia_scores(members, member_refs, others, other_refs),
            rmia_scores(others, other_refs, others, other_refs, target_is_population=True))
