"""The federation's leakage gate: check, pool and judge the requesting clients' audits.

Clients are not trusted. Every figure a client sends is checked (finite, in
range, complete, consistent with what the node said in ``query.status``); an
audit that fails a check is that node's failure, never a pass, and its
requests are not committed. The server computes the uncertainty itself, from
the set sizes alone: under "the forget set is indistinguishable from
non-members" an AUC's variance is (m + n + 1) / (12 m n) whatever the client
claims, so a client cannot widen the tolerance by reporting a large variance.

Pooling weights each client by its forget-set size (the fraction of the
forgotten samples it speaks for); variances of independent audits add with
the squared weights.

The decision is a test with a stated false-alarm rate: a model fails when an
attack's pooled AUC lies further from 0.5 than ``auc_margin`` by more than
chance allows, at a critical value that splits ``false_alarm`` over every
look the gate may take (unlearning rounds x attempts) and every deciding
attack (Bonferroni). A model that leaks no more than a retrained one fails
with probability at most ``false_alarm``. What the test cannot promise is
power: a small forget set leaks undetected. That is why the same gate also
judges the do-nothing original (``server.unlearning_phase``): if the original
passes too, the run says so rather than "forgotten".

The gate decides with ``attacks`` (by default the reference-model attacks
LiRA and RMIA; population threshold attacks are reported beside them). A
deciding attack missing from the pooled audits fails the gate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedunlearn.common.audit.attacks import ATTACKS
from fedunlearn.common.audit.calibrated import CALIBRATED_ATTACKS
from fedunlearn.common.audit.local import AttackFigures, LocalAudit
from fedunlearn.common.audit.normal import upper_quantile
from fedunlearn.common.errors import ConfigError, DataError

__all__ = ["AttackVerdict", "GateConfig", "GateResult", "PooledAttack", "PooledAudit", "audit_problem",
           "leakage_gate", "null_auc_variance", "pool_audits"]


@dataclass(frozen=True)
class GateConfig:
    """attacks: the attacks that decide (others are reported); false_alarm: the chance of failing a model
    that leaks no more than a retrained one, over all looks and deciding attacks; auc_margin: allowed
    |AUC - 0.5| before testing (0: any detectable leak fails); accuracy_margin: allowed |forget - hold-out
    accuracy| (points) before testing; max_test_drop: allowed test-accuracy loss (points)."""

    attacks: tuple[str, ...] = ("lira", "rmia")
    false_alarm: float = 0.05
    auc_margin: float = 0.0
    accuracy_margin: float = 2.0
    max_test_drop: float = 1.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "attacks", tuple(self.attacks))
        if not self.attacks:
            raise ConfigError("[gate].attacks must name at least one attack")
        known = [*ATTACKS.names(), *CALIBRATED_ATTACKS.names()]
        for name in self.attacks:
            if name not in known:
                raise ConfigError(f"[gate].attacks: unknown attack {name!r}; valid: {', '.join(known)}")
        if not 0 < self.false_alarm < 1:
            raise ConfigError(f"[gate].false_alarm must be in (0, 1), got {self.false_alarm}")
        for name in ("auc_margin", "accuracy_margin", "max_test_drop"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"[gate].{name} must be >= 0, got {getattr(self, name)}")

    @property
    def needs_references(self) -> bool:
        return any(name in CALIBRATED_ATTACKS for name in self.attacks)

    def critical_z(self, looks: int, groups: int = 1) -> float:
        """Two-sided critical value of one test, Bonferroni over looks x deciding attacks x the groups tested
        at each look (the pool, and each client's own audit when several clients pool)."""
        if looks < 1:
            raise ConfigError(f"the gate needs at least one look, got {looks}")
        return upper_quantile(self.false_alarm / (2.0 * looks * len(self.attacks) * groups))


def null_auc_variance(members: int, nonmembers: int) -> float:
    """Variance of an AUC when members and non-members are exchangeable (Mann-Whitney's null)."""
    return (members + nonmembers + 1) / (12.0 * members * nonmembers)


def _bad_number(value: float, low: float, high: float) -> bool:
    return not (math.isfinite(value) and low <= value <= high)


def audit_problem(audit: LocalAudit, *, expected_forget: int, max_holdout: int,
                  required: Sequence[str]) -> str | None:
    """Why a client's audit cannot be pooled (None if it can). ``expected_forget``: the samples under
    the audited requests, from the node's own ``query.status``; ``max_holdout``: its hold-out size."""
    if audit.forget_size != expected_forget:
        return f"forget-size {audit.forget_size} disagrees with the {expected_forget} samples its status reported"
    if not 1 <= audit.holdout_size <= max_holdout:
        return f"holdout-size {audit.holdout_size} is outside 1..{max_holdout} (its status reported {max_holdout})"
    for name, value in (("forget-accuracy", audit.forget_accuracy), ("holdout-accuracy", audit.holdout_accuracy)):
        if _bad_number(value, 0.0, 100.0):
            return f"{name} {value!r} is not a percentage"
    missing = [name for name in required if name not in audit.attacks]
    if missing:
        return f"no figures for attack(s) {', '.join(missing)}"
    for name, figures in audit.attacks.items():
        if _bad_number(figures.auc, 0.0, 1.0):
            return f"{name} AUC {figures.auc!r} is not in [0, 1]"
        if _bad_number(figures.tpr_at_1pct_fpr, 0.0, 100.0):
            return f"{name} TPR {figures.tpr_at_1pct_fpr!r} is not a percentage"
    return None


@dataclass(frozen=True)
class PooledAttack:
    """One attack over all pooled audits; se is the server's own, from the sizes."""

    auc: float
    se: float
    tpr_at_1pct_fpr: float


@dataclass(frozen=True)
class PooledAudit:
    """Audits of several clients combined, weighted by forget-set size."""

    forget_size: int
    holdout_size: int
    forget_accuracy: float
    holdout_accuracy: float
    accuracy_se: float  # standard error of (forget - hold-out accuracy), percentage points
    attacks: dict[str, PooledAttack]


def pool_audits(audits: Sequence[LocalAudit]) -> PooledAudit:
    """Pool checked audits; only attacks every audit reports are pooled (the gate then fails on a
    deciding attack that is missing, rather than deciding on part of the forget set)."""
    if not audits:
        raise DataError("no audits to pool: no requesting client answered")
    weights = np.array([a.forget_size for a in audits], dtype=np.float64)
    if not (weights > 0).all():
        raise DataError("every pooled audit needs a non-empty forget set")
    weights /= weights.sum()

    def mean(values: Sequence[float]) -> float:
        return float(np.dot(weights, values))

    def se(variances: Sequence[float]) -> float:
        return math.sqrt(float(np.dot(weights**2, variances)))

    auc_variances = [null_auc_variance(a.forget_size, a.holdout_size) for a in audits]
    accuracy_variances = [_proportion_variance(a.forget_accuracy, a.forget_size)
                          + _proportion_variance(a.holdout_accuracy, a.holdout_size) for a in audits]
    names = [n for n in audits[0].attacks if all(n in a.attacks for a in audits)]

    def pooled(name: str) -> PooledAttack:
        figures: list[AttackFigures] = [a.attacks[name] for a in audits]
        return PooledAttack(auc=mean([f.auc for f in figures]), se=se(auc_variances),
                            tpr_at_1pct_fpr=mean([f.tpr_at_1pct_fpr for f in figures]))

    return PooledAudit(
        forget_size=int(sum(a.forget_size for a in audits)), holdout_size=int(sum(a.holdout_size for a in audits)),
        forget_accuracy=mean([a.forget_accuracy for a in audits]),
        holdout_accuracy=mean([a.holdout_accuracy for a in audits]), accuracy_se=se(accuracy_variances),
        attacks={name: pooled(name) for name in names},
    )


def _proportion_variance(percent: float, n: int) -> float:
    """Binomial variance of a percentage; a floor of one sample's worth keeps 0% / 100% honest."""
    p = min(max(percent / 100.0, 0.5 / n), 1.0 - 0.5 / n)
    return 1e4 * p * (1.0 - p) / n


@dataclass(frozen=True)
class AttackVerdict:
    """One attack's reading: tolerance is the largest |AUC - 0.5| that passes; ci is at the gate's level."""

    auc: float
    ci: tuple[float, float]
    tpr_at_1pct_fpr: float
    tolerance: float
    deciding: bool

    @property
    def leaks(self) -> bool:
        return abs(self.auc - 0.5) > self.tolerance


@dataclass(frozen=True)
class GateResult:
    passed: bool
    attack: str | None  # the deciding attack furthest beyond its tolerance (None: no deciding attack reported)
    forget_auc: float | None  # its pooled AUC
    ci: tuple[float, float] | None
    tolerance: float | None
    forget_accuracy: float
    holdout_accuracy: float
    test_drop: float
    forget_size: int
    holdout_size: int
    looks: int
    false_alarm: float
    attacks: dict[str, AttackVerdict] = field(default_factory=dict)
    reasons: tuple[str, ...] = field(default=())
    leaked: bool = False  # a deciding attack or the accuracy gap told the forget set apart (not only utility)


def _verdict(pooled: PooledAttack, z: float, config: GateConfig, deciding: bool) -> AttackVerdict:
    half = z * pooled.se
    return AttackVerdict(auc=pooled.auc, ci=(max(0.0, pooled.auc - half), min(1.0, pooled.auc + half)),
                         tpr_at_1pct_fpr=pooled.tpr_at_1pct_fpr, tolerance=config.auc_margin + half,
                         deciding=deciding)


def leakage_gate(audits: Mapping[str, LocalAudit], test_drop: float, config: GateConfig, *,
                 looks: int) -> GateResult:
    """Publish only if no deciding attack (on the pool, or on any one client's own audit), the accuracy gap,
    or the test-accuracy drop says otherwise. ``audits``: checked audits by who sent them.

    Testing each client as well keeps one client's large, clean-looking forget set from diluting another's
    leak below the pool's threshold; the tests are counted in the false-alarm rate."""
    pooled = pool_audits(list(audits.values()))
    groups = 1 + len(audits) if len(audits) > 1 else 1
    z = config.critical_z(looks, groups)
    verdicts = {name: _verdict(p, z, config, name in config.attacks) for name, p in pooled.attacks.items()}
    reasons = [f"no pooled audit by the {name} attack (every audited client must report it)"
               for name in config.attacks if name not in verdicts]
    deciding = {name: v for name, v in verdicts.items() if v.deciding}
    reasons += [f"{name} attack AUC {v.auc:.3f} is more than {v.tolerance:.3f} from 0.5" for name, v in deciding.items()
                if v.leaks]
    if len(audits) > 1:
        reasons += _client_leaks(audits, deciding, z, config)
    band = config.accuracy_margin + z * pooled.accuracy_se
    gap = pooled.forget_accuracy - pooled.holdout_accuracy
    if abs(gap) > band:
        reasons.append(f"forget accuracy {pooled.forget_accuracy:.1f}% is {gap:+.1f} points from hold-out "
                       f"accuracy {pooled.holdout_accuracy:.1f}% (band {band:.1f})")
    leaked = bool(reasons)
    if not math.isfinite(test_drop) or test_drop > config.max_test_drop:
        reasons.append(f"test accuracy dropped {test_drop:.2f} points (allowed {config.max_test_drop})")
    worst = max(deciding, key=lambda n: abs(deciding[n].auc - 0.5) - deciding[n].tolerance, default=None)
    shown = verdicts[worst] if worst is not None else None
    return GateResult(
        passed=not reasons, attack=worst, forget_auc=shown.auc if shown else None,
        ci=shown.ci if shown else None, tolerance=shown.tolerance if shown else None,
        forget_accuracy=pooled.forget_accuracy, holdout_accuracy=pooled.holdout_accuracy, test_drop=test_drop,
        forget_size=pooled.forget_size, holdout_size=pooled.holdout_size, looks=looks,
        false_alarm=config.false_alarm, attacks=verdicts, reasons=tuple(reasons), leaked=leaked,
    )


def _client_leaks(audits: Mapping[str, LocalAudit], deciding: Mapping[str, AttackVerdict], z: float,
                  config: GateConfig) -> list[str]:
    reasons = []
    for who, audit in audits.items():
        se = math.sqrt(null_auc_variance(audit.forget_size, audit.holdout_size))
        for name in deciding:
            auc = audit.attacks[name].auc
            if abs(auc - 0.5) > config.auc_margin + z * se:
                reasons.append(f"{who}: {name} attack AUC {auc:.3f} is more than "
                               f"{config.auc_margin + z * se:.3f} from 0.5")
    return reasons
