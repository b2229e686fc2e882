"""U-LiRA: can a per-example attacker tell an unlearned model from one retrained without the sample?

Population attacks ask whether forget samples look like unseen samples to one
model, and an inexact method can pass them while its outputs on each forgotten
sample still differ, in a consistent way, from what retraining gives. Hayes et
al. 2024 ("Inexact unlearning needs more careful evaluations to avoid a false
sense of privacy") measure exactly that: over S shadow splits, each target
sample x is forgotten in some of them; the statistic φ(x) of the method's
unlearned models there forms one Gaussian and that of the models retrained
without x on the same splits forms another. A per-example likelihood-ratio
test then calls each held-out output "unlearned" or "retrained". Its accuracy
is 0.5 when the method is indistinguishable from retraining and 1.0 when every
call is right.

Everything here is a pure numpy function of the statistics, (S, T) arrays for
S shadows and T target samples; ``simulations.bench_ulira`` trains the
shadows. The test is evaluated leave-one-shadow-out: the Gaussians scoring a
shadow's outputs are fitted on the other shadows only, so an attacker that
memorised the evaluated outputs cannot score above chance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedunlearn.common.audit.calibrated import PER_EXAMPLE_VARIANCE_MIN
from fedunlearn.common.audit.normal import log_pdf
from fedunlearn.common.errors import ConfigError

__all__ = ["MIN_FORGOTTEN_SHADOWS", "ULiraResult", "ulira_accuracy"]

# A target is scored on a held-out shadow only if it was forgotten in another one: the fit needs a mean.
MIN_FORGOTTEN_SHADOWS = 2
_STD_FLOOR = 1e-6  # identical outputs in every shadow must not divide by zero


@dataclass(frozen=True)
class ULiraResult:
    """accuracy: share of correct calls, 0-1, half of them on unlearned outputs and half on retrained ones
    (0.5 = indistinguishable from retraining).
    cases: held-out (shadow, target) pairs scored, each giving one unlearned and one retrained call.
    targets: targets forgotten in at least ``MIN_FORGOTTEN_SHADOWS`` shadows (the ones that could be scored).
    per_example_variance: False when each Gaussian's spread was pooled over targets (few shadows).
    """

    accuracy: float
    cases: int
    targets: int
    shadows: int
    per_example_variance: bool


def _inputs(unlearned: np.ndarray, retrained: np.ndarray,
            forgotten: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u = np.asarray(unlearned, dtype=np.float64)
    r = np.asarray(retrained, dtype=np.float64)
    mask = np.asarray(forgotten, dtype=bool)
    if u.ndim != 2 or u.shape != r.shape or u.shape != mask.shape:
        raise ValueError(f"unlearned, retrained and forgotten must be (S, T) arrays of one shape, got "
                         f"{u.shape}, {r.shape}, {mask.shape}")
    if not (np.isfinite(u[mask]).all() and np.isfinite(r[mask]).all()):
        raise ValueError("unlearned or retrained statistics contain NaN or Inf where a target was forgotten")
    return u, r, mask


def _fit(values: np.ndarray, fit: np.ndarray, per_example: bool) -> tuple[np.ndarray, np.ndarray]:
    """(S, T') values, (S, T') fit mask (every target fitted at least once) -> per-target mean and std.

    Pooled, the spread is that of every value around its own target's mean, as LiRA pools its
    reference spread with few models. The choice is made once per evaluation, not per held-out shadow
    (LiRA's ``_masked_moments`` would decide it afresh from each fit's counts), so that every call of
    one evaluation uses the same kind of Gaussian.
    """
    counts = fit.sum(axis=0)
    mean = np.where(fit, values, 0.0).sum(axis=0) / counts
    squares = np.where(fit, values - mean, 0.0) ** 2
    if per_example:
        std = np.sqrt(squares.sum(axis=0) / (counts - 1))
    else:
        dof = int((counts - 1).sum())
        if dof < 1:
            raise ConfigError("U-LiRA cannot estimate a spread: no target was forgotten in two of the fitting "
                              "shadows; train more shadows (16 or more recommended)")
        std = np.full(values.shape[1], np.sqrt(float(squares.sum()) / dof))
    return mean, np.maximum(std, _STD_FLOOR)


def _log_ratio(value: np.ndarray, unlearned: tuple[np.ndarray, np.ndarray],
               retrained: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """log N(v; μ_U, σ_U²) - log N(v; μ_R, σ_R²): > 0 calls "unlearned"."""
    return log_pdf(value, *unlearned) - log_pdf(value, *retrained)


def ulira_accuracy(unlearned: np.ndarray, retrained: np.ndarray, forgotten: np.ndarray) -> ULiraResult:
    """Leave-one-shadow-out accuracy of the per-example likelihood-ratio test, unlearned vs retrained.

    unlearned: (S, T) φ of shadow s's unlearned model on target t.
    retrained: (S, T) φ of shadow s's model retrained without its forget set, on target t.
    forgotten: (S, T) bool, True where shadow s trained on target t and then forgot it; only these
        entries are used (elsewhere the values may be anything finite or not).

    For each shadow s and each target t it forgot, the two Gaussians of t are fitted on the other
    shadows that forgot t, and both of s's outputs on t are called; a tie (log ratio exactly 0)
    counts as half right. Each Gaussian gets its own spread, per target when every scored target was
    forgotten in at least ``PER_EXAMPLE_VARIANCE_MIN`` other shadows, otherwise pooled over targets.
    """
    u, r, mask = _inputs(unlearned, retrained, forgotten)
    shadows = u.shape[0]
    scorable = mask.sum(axis=0) >= MIN_FORGOTTEN_SHADOWS
    if not scorable.any():
        raise ConfigError(f"U-LiRA needs targets forgotten in at least {MIN_FORGOTTEN_SHADOWS} of the "
                          f"{shadows} shadows, found none; train more shadows (16 or more recommended)")
    u, r, mask = u[:, scorable], r[:, scorable], mask[:, scorable]
    per_example = int(mask.sum(axis=0).min()) - 1 >= PER_EXAMPLE_VARIANCE_MIN
    correct, cases = 0.0, 0
    for held_out in range(shadows):
        fit = mask.copy()
        fit[held_out] = False
        fitted = fit.any(axis=0)  # all of them except targets forgotten only in the held-out shadow
        if not (mask[held_out] & fitted).any():
            continue
        moments_u = _fit(u[:, fitted], fit[:, fitted], per_example)
        moments_r = _fit(r[:, fitted], fit[:, fitted], per_example)
        scored = mask[held_out, fitted]
        chosen_u = tuple(m[scored] for m in moments_u)
        chosen_r = tuple(m[scored] for m in moments_r)
        ratio_u = _log_ratio(u[held_out, fitted][scored], chosen_u, chosen_r)
        ratio_r = _log_ratio(r[held_out, fitted][scored], chosen_u, chosen_r)
        ties = (ratio_u == 0).sum() + (ratio_r == 0).sum()
        correct += float((ratio_u > 0).sum() + (ratio_r < 0).sum() + 0.5 * ties)
        cases += int(scored.sum())
    return ULiraResult(accuracy=correct / (2 * cases), cases=cases, targets=int(scorable.sum()),
                       shadows=shadows, per_example_variance=per_example)
