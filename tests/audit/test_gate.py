"""The leakage gate: checking what clients send, pooling by forget size, and a decision with a stated
false-alarm rate that the clients cannot widen."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import norm

from fedunlearn.common.audit.gate import (
    GateConfig,
    audit_problem,
    leakage_gate,
    null_auc_variance,
    pool_audits,
)
from fedunlearn.common.audit.local import AttackFigures, LocalAudit
from fedunlearn.common.audit.roc import auc_confidence_interval, auc_variance, roc_auc
from fedunlearn.common.errors import ConfigError, DataError

Z95 = 1.959964


# --- the server's own variance ---------------------------------------------------------------------------


def test_null_variance_matches_simulated_aucs_of_exchangeable_groups() -> None:
    rng = np.random.default_rng(0)
    aucs = [roc_auc(rng.normal(size=40), rng.normal(size=90)) for _ in range(4000)]
    assert float(np.var(aucs)) == pytest.approx(null_auc_variance(40, 90), rel=0.08)


# --- checking a client's figures -------------------------------------------------------------------------


def _audit(size: int = 50, auc: float = 0.5, *, forget_acc: float = 90.0, holdout_acc: float = 90.0,
           holdout_size: int = 100, attacks: tuple[str, ...] = ("loss", "lira", "rmia"),
           tpr: float = 1.0) -> LocalAudit:
    return LocalAudit(forget_size=size, holdout_size=holdout_size, forget_accuracy=forget_acc,
                      holdout_accuracy=holdout_acc, attacks={a: AttackFigures(auc, tpr) for a in attacks})


def _problem(audit: LocalAudit, expected: int = 50, max_holdout: int = 200) -> str | None:
    return audit_problem(audit, expected_forget=expected, max_holdout=max_holdout, required=("lira", "rmia"))


def test_an_honest_audit_has_no_problem() -> None:
    assert _problem(_audit()) is None


@pytest.mark.parametrize(("audit", "words"), [
    (_audit(auc=math.nan), "AUC nan"),
    (_audit(auc=1.5), "AUC 1.5"),
    (_audit(tpr=-1.0), "TPR"),
    (_audit(tpr=math.inf), "TPR"),
    (_audit(forget_acc=math.nan), "forget-accuracy"),
    (_audit(holdout_acc=101.0), "holdout-accuracy"),
    (_audit(size=10**6), "forget-size 1000000 disagrees with the 50"),
    (_audit(size=0), "forget-size 0"),
    (_audit(holdout_size=0), "holdout-size 0"),
    (_audit(holdout_size=10**6), "holdout-size 1000000"),
    (_audit(attacks=("loss", "lira")), "no figures for attack(s) rmia"),
    (_audit(attacks=()), "lira, rmia"),
])
def test_malformed_or_inconsistent_figures_are_named(audit: LocalAudit, words: str) -> None:
    problem = _problem(audit)
    assert problem is not None and words in problem


# --- pooling ---------------------------------------------------------------------------------------------


def test_pool_weights_by_forget_size_and_computes_its_own_standard_errors() -> None:
    audits = [_audit(10, 0.8, forget_acc=100.0, holdout_acc=80.0), _audit(30, 0.6, forget_acc=90.0, holdout_acc=85.0),
              _audit(60, 0.5, forget_acc=70.0, holdout_acc=75.0)]
    pooled = pool_audits(audits)
    w = np.array([10, 30, 60]) / 100
    assert (pooled.forget_size, pooled.holdout_size) == (100, 300)
    assert pooled.attacks["lira"].auc == pytest.approx(0.1 * 0.8 + 0.3 * 0.6 + 0.6 * 0.5)
    expected_se = math.sqrt(float(np.dot(w**2, [null_auc_variance(n, 100) for n in (10, 30, 60)])))
    assert pooled.attacks["lira"].se == pytest.approx(expected_se)
    assert pooled.forget_accuracy == pytest.approx(0.1 * 100 + 0.3 * 90 + 0.6 * 70)
    assert pooled.holdout_accuracy == pytest.approx(0.1 * 80 + 0.3 * 85 + 0.6 * 75)
    assert pooled.accuracy_se > 0


def test_pool_keeps_only_attacks_every_client_ran() -> None:
    pooled = pool_audits([_audit(), _audit(attacks=("loss",))])
    assert set(pooled.attacks) == {"loss"}


def test_pool_of_nothing_or_of_empty_forget_sets_is_refused() -> None:
    with pytest.raises(DataError, match="no audits"):
        pool_audits([])
    with pytest.raises(DataError, match="non-empty forget set"):
        pool_audits([_audit(size=0)])


# --- the decision ----------------------------------------------------------------------------------------


SE_1000 = math.sqrt(null_auc_variance(1000, 1000))  # the server's standard error of a 1000-vs-1000 audit


def _audits(auc: float = 0.5, *, forget_acc: float = 90.0, holdout_acc: float = 90.0,
            attacks: tuple[str, ...] = ("loss", "lira", "rmia")) -> dict[str, LocalAudit]:
    """One client's audit of 1000 forget samples against 1000 non-members; the loss attack reads 0.5."""
    figures = {a: AttackFigures(auc if a != "loss" else 0.5, 2.0) for a in attacks}
    return {"partition 0": LocalAudit(1000, 1000, forget_acc, holdout_acc, figures)}


CONFIG = GateConfig(auc_margin=0.03, accuracy_margin=2.0, max_test_drop=1.5)


def test_the_critical_value_splits_the_false_alarm_rate_over_looks_attacks_and_groups() -> None:
    assert CONFIG.critical_z(1) == pytest.approx(float(norm.isf(0.05 / 4)))
    assert CONFIG.critical_z(6) == pytest.approx(float(norm.isf(0.05 / 24)))
    assert CONFIG.critical_z(6, groups=3) == pytest.approx(float(norm.isf(0.05 / 72)))
    assert GateConfig(attacks=("lira",), false_alarm=0.1).critical_z(1) == pytest.approx(float(norm.isf(0.05)))
    with pytest.raises(ConfigError, match="at least one look"):
        CONFIG.critical_z(0)


def test_gate_passes_a_model_at_chance() -> None:
    result = leakage_gate(_audits(), test_drop=0.2, config=CONFIG, looks=1)
    z = CONFIG.critical_z(1)
    assert result.passed and result.reasons == ()
    assert result.forget_auc == 0.5 and result.attack in ("lira", "rmia")
    assert result.tolerance == pytest.approx(0.03 + z * SE_1000)
    assert result.ci == pytest.approx((0.5 - z * SE_1000, 0.5 + z * SE_1000))
    assert set(result.attacks) == {"loss", "lira", "rmia"} and not result.attacks["loss"].deciding


def test_gate_fails_a_leaking_model_on_a_deciding_attack_only() -> None:
    result = leakage_gate(_audits(0.7), test_drop=0.0, config=CONFIG, looks=1)
    assert not result.passed and result.forget_auc == 0.7
    assert [r.split()[0] for r in result.reasons] == ["lira", "rmia"]
    quiet = {"partition 0": replace(_audits()["partition 0"], attacks={
        "loss": AttackFigures(0.9, 50.0), "lira": AttackFigures(0.5, 1.0), "rmia": AttackFigures(0.5, 1.0)})}
    assert leakage_gate(quiet, 0.0, CONFIG, looks=1).passed  # the population attack reports, it does not decide


def test_an_auc_below_one_half_leaks_too() -> None:
    result = leakage_gate(_audits(0.3), test_drop=0.0, config=CONFIG, looks=1)
    assert not result.passed and "lira attack AUC 0.300" in result.reasons[0]


def test_a_missing_deciding_attack_fails_the_gate() -> None:
    result = leakage_gate(_audits(attacks=("loss",)), test_drop=0.0, config=CONFIG, looks=1)
    assert not result.passed and result.forget_auc is None and result.attack is None
    assert any("no pooled audit by the lira attack" in r for r in result.reasons)


def test_more_looks_mean_a_stricter_test_per_look() -> None:
    # 0.565: beyond one look's tolerance (0.03 + 2.24 se = 0.059), inside forty looks' (0.03 + 3.42 se = 0.074)
    one = leakage_gate(_audits(0.565), 0.0, CONFIG, looks=1)
    many = leakage_gate(_audits(0.565), 0.0, CONFIG, looks=40)
    assert not one.passed and many.passed
    assert many.tolerance is not None and one.tolerance is not None and many.tolerance > one.tolerance


def test_a_large_clean_looking_client_cannot_dilute_another_clients_leak() -> None:
    leaking = LocalAudit(50, 100, 90.0, 90.0, {a: AttackFigures(0.9, 30.0) for a in ("lira", "rmia")})
    clean = LocalAudit(2000, 2000, 90.0, 90.0, {a: AttackFigures(0.5, 1.0) for a in ("lira", "rmia")})
    result = leakage_gate({"partition 0": leaking, "partition 1": clean}, 0.0, CONFIG, looks=1)
    assert result.forget_auc is not None and result.tolerance is not None
    assert abs(result.forget_auc - 0.5) < result.tolerance  # the pool alone would have passed
    assert not result.passed and all(r.startswith("partition 0:") for r in result.reasons)


@pytest.mark.parametrize("forget_acc", [96.0, 84.0])
def test_gate_fails_an_accuracy_gap_beyond_the_band(forget_acc: float) -> None:
    result = leakage_gate(_audits(forget_acc=forget_acc), test_drop=0.0, config=CONFIG, looks=1)
    assert not result.passed
    assert len(result.reasons) == 1 and "from hold-out accuracy" in result.reasons[0]
    assert leakage_gate(_audits(forget_acc=91.5), test_drop=0.0, config=CONFIG, looks=1).passed


def test_gate_fails_a_test_drop_beyond_the_limit_or_unknown() -> None:
    result = leakage_gate(_audits(), test_drop=1.6, config=CONFIG, looks=1)
    assert result.reasons == ("test accuracy dropped 1.60 points (allowed 1.5)",)
    assert leakage_gate(_audits(), test_drop=1.5, config=CONFIG, looks=1).passed
    assert not leakage_gate(_audits(), test_drop=math.nan, config=CONFIG, looks=1).passed


def test_the_gate_says_whether_the_forget_set_stood_out_or_only_utility_failed() -> None:
    """A candidate that failed on the test drop alone hid the forget set: the phase trains it back
    (a repair round) instead of unlearning more; anything else, malformed figures included, leaked."""
    utility_only = leakage_gate(_audits(), test_drop=5.0, config=CONFIG, looks=1)
    assert not utility_only.passed and not utility_only.leaked
    for leaking in (_audits(0.8), _audits(forget_acc=99.0), _audits(attacks=("loss",))):
        assert leakage_gate(leaking, test_drop=0.0, config=CONFIG, looks=1).leaked
    assert not leakage_gate(_audits(), test_drop=0.0, config=CONFIG, looks=1).leaked


def test_gate_lists_every_reason() -> None:
    result = leakage_gate(_audits(0.8, forget_acc=99.0), test_drop=5.0, config=CONFIG, looks=1)
    assert not result.passed and len(result.reasons) == 4  # lira, rmia, accuracy, test drop


@pytest.mark.parametrize(
    "field", [{"auc_margin": -0.01}, {"accuracy_margin": -1.0}, {"max_test_drop": -0.5},
              {"auc_margin": float("nan")}, {"false_alarm": 0.0}, {"false_alarm": 1.0}, {"attacks": ()},
              {"attacks": ("lira", "shadow")}],
)
def test_gate_config_rejects_bad_values(field: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=rf"\[gate\]\.{next(iter(field))}"):
        GateConfig(**field)  # type: ignore[arg-type]


def test_gate_config_accepts_zero_and_knows_when_it_needs_references() -> None:
    assert GateConfig(auc_margin=0.0, accuracy_margin=0.0, max_test_drop=0.0).auc_margin == 0.0
    assert GateConfig().needs_references and not GateConfig(attacks=("loss",)).needs_references


# --- AUC variance (roc.py): the DeLong interval the centralised audit reports -------------------------


@pytest.mark.parametrize(("members", "nonmembers"), [([1.0], [0.0, 2.0, 3.0]), ([1.0, 2.0, 3.0], [0.5]),
                                                    ([1.0], [0.5])])
def test_auc_variance_is_infinite_for_a_single_sample_group(members: list[float], nonmembers: list[float]) -> None:
    assert auc_variance(np.array(members), np.array(nonmembers)) == math.inf


@pytest.mark.parametrize("seed", range(3))
def test_auc_variance_matches_the_delong_interval(seed: int) -> None:
    rng = np.random.default_rng(seed)
    members, nonmembers = rng.normal(0.4, 1, 40 + seed), rng.normal(0, 1, 60)
    variance = auc_variance(members, nonmembers)
    low, high = auc_confidence_interval(members, nonmembers, method="delong", level=0.95)
    auc = roc_auc(members, nonmembers)
    assert low > 0.0 and high < 1.0  # not clipped
    assert (high - low) / 2 == pytest.approx(Z95 * math.sqrt(variance), rel=1e-5)
    assert (low + high) / 2 == pytest.approx(auc)


def test_auc_variance_is_zero_for_perfect_separation_and_shrinks_with_n() -> None:
    assert auc_variance(np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0])) == 0.0
    rng = np.random.default_rng(0)
    small = auc_variance(rng.normal(0.5, 1, 30), rng.normal(0, 1, 30))
    large = auc_variance(rng.normal(0.5, 1, 3000), rng.normal(0, 1, 3000))
    assert large < small / 20
