"""ROC analysis of a membership score: curve, AUC, TPR at low FPR, and AUC intervals.

Pure numpy so that it grades scores from any backend. Convention: a
higher score means "more likely a member"; members are the positives. Rates
here are fractions in [0, 1]; reports turn TPRs into percentages.

Forget sets and hold-outs are often small, so a point AUC is noisy; the leakage
gate therefore asks for a confidence interval, by DeLong's variance or by a
bootstrap of each group.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from fedunlearn.common.audit.normal import quantile
from fedunlearn.common.errors import ConfigError

__all__ = ["CIMethod", "auc_confidence_interval", "auc_variance", "roc_auc", "roc_curve", "tpr_at_fpr"]

CIMethod = Literal["delong", "bootstrap"]


def _scores(values: np.ndarray, group: str) -> np.ndarray:
    """Validate one group's scores: non-empty, 1-D, finite -> float64 copy."""
    scores = np.asarray(values, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"{group} scores must be 1-D, got shape {scores.shape}")
    if scores.size == 0:
        raise ConfigError(f"{group} set is empty: a membership audit needs at least one {group} sample")
    if not np.isfinite(scores).all():
        raise ValueError(f"{group} scores contain NaN or Inf")
    return scores


def _groups(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _scores(member_scores, "member"), _scores(nonmember_scores, "non-member")


def roc_curve(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M,), (N,) scores -> (fpr, tpr), each (T + 1,) for T distinct scores.

    Point t is the classifier "member if score >= the t-th largest distinct
    score"; the curve starts at (0, 0) and ends at (1, 1). Tied scores move
    both rates in one step, as a threshold cannot split them.
    """
    members, nonmembers = _groups(member_scores, nonmember_scores)
    scores = np.concatenate([members, nonmembers])
    is_member = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    order = np.argsort(-scores, kind="stable")
    scores, is_member = scores[order], is_member[order]
    last_of_tie = np.flatnonzero(np.diff(scores) != 0)
    ends = np.append(last_of_tie, scores.size - 1)
    tp = np.cumsum(is_member)[ends]
    fp = (ends + 1) - tp
    fpr = np.concatenate([[0.0], fp / nonmembers.size])
    tpr = np.concatenate([[0.0], tp / members.size])
    return fpr, tpr


def roc_auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """P(member score > non-member score) + P(tie) / 2, from the Mann-Whitney U statistic.

    Equals the trapezoidal area under ``roc_curve`` and sklearn's roc_auc_score.
    """
    members, nonmembers = _groups(member_scores, nonmember_scores)
    return _auc(members, nonmembers)


def _auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    ranks = _average_ranks(np.concatenate([members, nonmembers]))
    m, n = members.size, nonmembers.size
    u = ranks[:m].sum() - m * (m + 1) / 2.0
    return float(u / (m * n))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, each group of tied values sharing the mean of its ranks."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    ends = np.append(starts[1:], values.size)  # each tie group holds positions starts..ends-1
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def tpr_at_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray, fpr: float) -> float:
    """Largest TPR over thresholds whose FPR is <= ``fpr`` (a fraction, e.g. 0.01).

    The FPR moves in steps of 1/N, so with fewer than 1/fpr non-members only
    FPR = 0 qualifies and this is the TPR at zero FPR: the share of members
    scoring above every non-member. It is never interpolated upwards.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ConfigError(f"target fpr must be a fraction in [0, 1], got {fpr}")
    fprs, tprs = roc_curve(member_scores, nonmember_scores)
    return float(tprs[fprs <= fpr].max())


def _share_below(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(R,), (V,) -> (V,): share of ``reference`` below each value, ties counted 1/2."""
    ordered = np.sort(reference)
    below = np.searchsorted(ordered, values, side="left")
    tied = np.searchsorted(ordered, values, side="right") - below
    return (below + 0.5 * tied) / reference.size


def _placements(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: each member's AUC against all non-members, and vice versa.

    (M,), (N,) -> (M,), (N,); the mean of either equals the AUC.
    """
    return _share_below(nonmembers, members), 1.0 - _share_below(members, nonmembers)


def _delong_variance(members: np.ndarray, nonmembers: np.ndarray) -> float:
    per_member, per_nonmember = _placements(members, nonmembers)
    return float(per_member.var(ddof=1) / members.size + per_nonmember.var(ddof=1) / nonmembers.size)


def auc_variance(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """DeLong's (1988) variance of the AUC; inf when a group has a single sample (unknowable).

    Variances of independent audits add, which is how the federation pools them.
    """
    members, nonmembers = _groups(member_scores, nonmember_scores)
    if members.size < 2 or nonmembers.size < 2:
        return float("inf")
    return _delong_variance(members, nonmembers)


def _delong(members: np.ndarray, nonmembers: np.ndarray, level: float) -> tuple[float, float]:
    auc = _auc(members, nonmembers)
    variance = _delong_variance(members, nonmembers)
    half = quantile(0.5 + level / 2.0) * float(np.sqrt(variance))
    return max(0.0, auc - half), min(1.0, auc + half)


def _bootstrap(
    members: np.ndarray, nonmembers: np.ndarray, level: float, n_boot: int, seed: int
) -> tuple[float, float]:
    """Percentile interval; each group is resampled on its own, keeping M and N fixed."""
    rng = np.random.default_rng(seed)
    aucs = np.array([
        _auc(rng.choice(members, members.size), rng.choice(nonmembers, nonmembers.size))
        for _ in range(n_boot)
    ])
    low, high = np.quantile(aucs, [0.5 - level / 2.0, 0.5 + level / 2.0])
    return float(low), float(high)


def auc_confidence_interval(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    *,
    level: float = 0.95,
    method: CIMethod = "delong",
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """(low, high) interval for the AUC at confidence ``level``, clipped to [0, 1].

    "delong": normal interval from DeLong's (1988) variance, O((M + N) log) time.
    "bootstrap": percentile interval over ``n_boot`` resamples, seeded.
    With a single member or non-member the variance cannot be estimated and
    the honest answer (0, 1) is returned. A perfectly separating score has zero
    estimated variance under both methods, so its interval collapses to a point.
    """
    members, nonmembers = _groups(member_scores, nonmember_scores)
    if not 0.0 < level < 1.0:
        raise ConfigError(f"confidence level must be in (0, 1), got {level}")
    if method not in get_args(CIMethod):
        raise ConfigError(f"unknown AUC interval method {method!r}; valid: {', '.join(get_args(CIMethod))}")
    if n_boot < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot}")
    if members.size < 2 or nonmembers.size < 2:
        return 0.0, 1.0
    if method == "delong":
        return _delong(members, nonmembers, level)
    return _bootstrap(members, nonmembers, level, n_boot, seed)
