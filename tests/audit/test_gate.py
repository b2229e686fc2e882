"""The leakage gate: local audits on a model that memorised digits, pooling by forget size, and the decision."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import norm

from common.audit.attacks import ATTACKS
from common.audit.gate import (
    GateConfig,
    LocalAudit,
    PooledAudit,
    audit_sets,
    leakage_gate,
    local_leakage_audit,
    pool_audits,
    torch_logits,
)
from common.audit.roc import auc_confidence_interval, auc_variance, roc_auc
from common.data.datasets import load_dataset
from common.data.tensors import LabeledData
from common.errors import ConfigError, DataError
from common.models import Classifier, ModelSpec, build_model
from common.training import TrainConfig, accuracy, train

CPU = torch.device("cpu")
Z95 = 1.959964


# --- local audit on a real (tiny) model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def memorised() -> tuple[Classifier, LabeledData, LabeledData]:
    """An MLP fitted hard to 150 digits (members) and 150 unseen test digits (non-members)."""
    digits = load_dataset("digits")
    members = digits.train.subset(torch.arange(150))
    nonmembers = digits.test.subset(torch.arange(150))
    model = build_model(ModelSpec("mlp", 1, 8, 10), seed=0)
    train(model, members, TrainConfig(epochs=40, batch_size=32, lr=3e-3), device=CPU,
          generator=torch.Generator().manual_seed(0))
    assert accuracy(model, members, device=CPU) == 100.0
    return model, members, nonmembers


def test_members_of_a_memorised_model_are_told_apart(memorised: tuple[Classifier, LabeledData, LabeledData]) -> None:
    model, members, nonmembers = memorised
    audit = local_leakage_audit(torch_logits(model, device=CPU), members, nonmembers)
    assert set(audit.aucs) == set(audit.variances) == set(ATTACKS.names())
    assert (audit.forget_size, audit.holdout_size) == (150, 150)
    assert audit.forget_accuracy == 100.0
    assert audit.holdout_accuracy == pytest.approx(accuracy(model, nonmembers, device=CPU))
    assert audit.holdout_accuracy < 100.0
    auc, se = audit.aucs["loss"], math.sqrt(audit.variances["loss"])
    assert auc > 0.5 + 2 * se, f"loss attack AUC {auc:.3f} (se {se:.3f}) does not see the memorisation"
    assert all(0.0 < v < 0.01 for v in audit.variances.values())


def test_an_audit_of_one_distribution_against_itself_is_chance(
    memorised: tuple[Classifier, LabeledData, LabeledData],
) -> None:
    model, _, nonmembers = memorised
    same = local_leakage_audit(torch_logits(model, device=CPU), nonmembers, nonmembers)
    assert all(auc == pytest.approx(0.5) for auc in same.aucs.values())
    assert same.forget_accuracy == same.holdout_accuracy
    # two disjoint halves of unseen data: both non-members, so the attack is at chance within its noise
    first, second = nonmembers.subset(torch.arange(75)), nonmembers.subset(torch.arange(75, 150))
    halves = local_leakage_audit(torch_logits(model, device=CPU), first, second)
    for name, auc in halves.aucs.items():
        assert abs(auc - 0.5) < 3 * math.sqrt(halves.variances[name]), name


# --- class forgetting: the comparison a retrained model passes -------------------------------------------


@pytest.fixture(scope="module")
def class_three() -> tuple[LabeledData, LabeledData, LabeledData]:
    """Digits train (members), the 3s among them (the forget set), and a hold-out of unseen digits."""
    digits = load_dataset("digits")
    members = digits.train.subset(torch.arange(600))
    return members, members.subset(members.y == 3), digits.test.subset(torch.arange(300))


def _fitted(data: LabeledData) -> Classifier:
    model = build_model(ModelSpec("mlp", 1, 8, 10), seed=0)
    train(model, data, TrainConfig(epochs=30, batch_size=32, lr=3e-3), device=CPU,
          generator=torch.Generator().manual_seed(0))
    return model


def test_class_audit_sets_compare_with_the_class_and_with_never_learned(
    class_three: tuple[LabeledData, LabeledData, LabeledData],
) -> None:
    _, _, holdout = class_three
    sets = audit_sets(holdout, "class", (3,), seed=0)
    assert len(sets.nonmembers) == int((holdout.y == 3).sum()) > 0
    assert bool((sets.nonmembers.y == 3).all())
    # other digits, scored against the label 3 they never carry
    assert len(sets.accuracy_reference) == len(holdout) - len(sets.nonmembers)
    assert bool((sets.accuracy_reference.y == 3).all())
    assert not bool(torch.isin(sets.accuracy_reference.ids, sets.nonmembers.ids).any())
    sample = audit_sets(holdout, "sample")
    assert sample.nonmembers is holdout and sample.accuracy_reference is holdout


def test_a_model_retrained_without_the_class_passes_the_class_gate_and_the_original_fails(
    class_three: tuple[LabeledData, LabeledData, LabeledData],
) -> None:
    members, forget, holdout = class_three
    sets = audit_sets(holdout, "class", (3,), seed=0)
    retrained, original = _fitted(members.subset(members.y != 3)), _fitted(members)
    verdicts = {}
    for name, model in (("retrained", retrained), ("original", original)):
        audit = local_leakage_audit(torch_logits(model, device=CPU), forget, sets.nonmembers,
                                    accuracy_reference=sets.accuracy_reference)
        verdicts[name] = leakage_gate(pool_audits([audit]), 0.0, GateConfig())
    assert verdicts["retrained"].passed, verdicts["retrained"].reasons
    assert verdicts["retrained"].forget_accuracy == 0.0
    assert not verdicts["original"].passed
    assert any("forget accuracy" in reason for reason in verdicts["original"].reasons)


def test_an_audit_needs_both_groups(memorised: tuple[Classifier, LabeledData, LabeledData]) -> None:
    model, members, nonmembers = memorised
    with pytest.raises(DataError, match="forget samples and non-members"):
        local_leakage_audit(torch_logits(model, device=CPU), members, members.subset(torch.arange(0)))
    with pytest.raises(DataError, match="compare forget accuracy with"):
        local_leakage_audit(torch_logits(model, device=CPU), members, nonmembers,
                            accuracy_reference=members.subset(torch.arange(0)))


# --- pooling ---------------------------------------------------------------------------------------------


def _audit(size: int, auc: float, variance: float, forget_acc: float = 90.0, holdout_acc: float = 90.0,
           holdout_size: int = 100) -> LocalAudit:
    return LocalAudit(forget_size=size, holdout_size=holdout_size, forget_accuracy=forget_acc,
                      holdout_accuracy=holdout_acc, aucs={"loss": auc, "entropy": 1.0 - auc},
                      variances={"loss": variance, "entropy": 2 * variance})


def test_pool_weights_by_forget_size() -> None:
    audits = [_audit(10, 0.8, 0.004, 100.0, 80.0), _audit(30, 0.6, 0.001, 90.0, 85.0),
              _audit(60, 0.5, 0.0005, 70.0, 75.0)]
    pooled = pool_audits(audits)
    w = np.array([10, 30, 60]) / 100
    assert pooled.forget_size == 100
    assert pooled.aucs["loss"] == pytest.approx(0.1 * 0.8 + 0.3 * 0.6 + 0.6 * 0.5)
    assert pooled.auc_se["loss"] == pytest.approx(math.sqrt(float(np.dot(w**2, [0.004, 0.001, 0.0005]))))
    assert pooled.aucs["entropy"] == pytest.approx(1.0 - pooled.aucs["loss"])
    assert pooled.auc_se["entropy"] == pytest.approx(math.sqrt(2) * pooled.auc_se["loss"])
    assert pooled.forget_accuracy == pytest.approx(0.1 * 100 + 0.3 * 90 + 0.6 * 70)
    assert pooled.holdout_accuracy == pytest.approx(0.1 * 80 + 0.3 * 85 + 0.6 * 75)
    assert pooled.accuracy_se > 0


def test_pool_of_one_audit_is_that_audit() -> None:
    pooled = pool_audits([_audit(40, 0.62, 0.0025)])
    assert pooled.aucs["loss"] == pytest.approx(0.62)
    assert pooled.auc_se["loss"] == pytest.approx(0.05)


def test_pool_keeps_only_attacks_every_client_ran() -> None:
    only_loss = LocalAudit(5, 5, 90.0, 90.0, {"loss": 0.5}, {"loss": 0.01})
    pooled = pool_audits([_audit(5, 0.5, 0.01), only_loss])
    assert set(pooled.aucs) == set(pooled.auc_se) == {"loss"}


def test_pool_of_nothing_is_refused() -> None:
    with pytest.raises(DataError, match="no audits"):
        pool_audits([])


# --- the gate --------------------------------------------------------------------------------------------


def _pooled(auc: float = 0.5, se: float = 0.001, forget_acc: float = 90.0, holdout_acc: float = 90.0,
            accuracy_se: float = 0.1) -> PooledAudit:
    return PooledAudit(forget_size=500, forget_accuracy=forget_acc, holdout_accuracy=holdout_acc,
                       accuracy_se=accuracy_se, aucs={"loss": auc, "confidence": 0.5},
                       auc_se={"loss": se, "confidence": se})


CONFIG = GateConfig(auc_tolerance=0.03, accuracy_band=2.0, max_test_drop=1.5)


def test_gate_passes_a_model_at_chance() -> None:
    result = leakage_gate(_pooled(), test_drop=0.2, config=CONFIG)
    assert result.passed and result.reasons == ()
    assert result.forget_auc == 0.5
    assert result.tolerance == pytest.approx(0.03)
    assert result.ci == pytest.approx((0.5 - Z95 * 0.001, 0.5 + Z95 * 0.001))


def test_gate_fails_a_leaking_model() -> None:
    result = leakage_gate(_pooled(auc=0.7, se=0.005), test_drop=0.0, config=CONFIG)
    assert not result.passed
    assert result.worst_attack == "loss"
    assert len(result.reasons) == 1 and "loss attack AUC 0.700" in result.reasons[0]


def test_an_auc_below_one_half_leaks_too() -> None:
    result = leakage_gate(_pooled(auc=0.3, se=0.005), test_drop=0.0, config=CONFIG)
    assert not result.passed and "loss attack AUC 0.300" in result.reasons[0]


@pytest.mark.parametrize("forget_acc", [93.0, 86.5])
def test_gate_fails_an_accuracy_gap_beyond_the_band(forget_acc: float) -> None:
    result = leakage_gate(_pooled(forget_acc=forget_acc), test_drop=0.0, config=CONFIG)
    assert not result.passed
    assert len(result.reasons) == 1 and "from hold-out accuracy" in result.reasons[0]
    inside = leakage_gate(_pooled(forget_acc=91.5), test_drop=0.0, config=CONFIG)
    assert inside.passed


def test_gate_fails_a_test_drop_beyond_the_limit() -> None:
    result = leakage_gate(_pooled(), test_drop=1.6, config=CONFIG)
    assert not result.passed
    assert result.reasons == ("test accuracy dropped 1.60 points (allowed 1.5)",)
    assert leakage_gate(_pooled(), test_drop=1.5, config=CONFIG).passed


def test_gate_lists_every_reason() -> None:
    result = leakage_gate(_pooled(auc=0.8, forget_acc=99.0), test_drop=5.0, config=CONFIG)
    assert not result.passed and len(result.reasons) == 3


def test_a_noisy_audit_widens_the_tolerance() -> None:
    # |0.56 - 0.5| > 0.03, but with se 0.05 the 95% half-width is ~0.098: the evidence shows no leak
    noisy = leakage_gate(_pooled(auc=0.56, se=0.05), test_drop=0.0, config=CONFIG)
    assert noisy.passed
    assert noisy.tolerance == pytest.approx(Z95 * 0.05)
    precise = leakage_gate(_pooled(auc=0.56, se=0.005), test_drop=0.0, config=CONFIG)
    assert not precise.passed
    # the accuracy band widens the same way
    assert leakage_gate(_pooled(forget_acc=95.0, accuracy_se=3.0), test_drop=0.0, config=CONFIG).passed


def test_the_gate_level_sets_the_width() -> None:
    wide = leakage_gate(_pooled(auc=0.56, se=0.025), test_drop=0.0, config=replace(CONFIG, level=0.99))
    narrow = leakage_gate(_pooled(auc=0.56, se=0.025), test_drop=0.0, config=replace(CONFIG, level=0.8))
    assert wide.tolerance == pytest.approx(float(norm.ppf(0.995)) * 0.025)
    assert wide.passed and not narrow.passed


@pytest.mark.parametrize(
    "field", [{"auc_tolerance": -0.01}, {"accuracy_band": -1.0}, {"max_test_drop": -0.5},
              {"auc_tolerance": float("nan")}, {"level": 0.0}, {"level": 1.0}],
)
def test_gate_config_rejects_bad_values(field: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=rf"\[gate\]\.{next(iter(field))}"):
        GateConfig(**field)


def test_gate_config_accepts_zero() -> None:
    assert GateConfig(auc_tolerance=0.0, accuracy_band=0.0, max_test_drop=0.0).auc_tolerance == 0.0


# --- AUC variance (roc.py), as the gate uses it ----------------------------------------------------------


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
