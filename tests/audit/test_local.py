"""One client's audit on real (tiny) models: memorised members, class forgetting, and reference-model
attacks that see what a population threshold misses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedunlearn.common.audit.attacks import ATTACKS
from fedunlearn.common.audit.calibrated import CALIBRATED_ATTACKS, Calibration
from fedunlearn.common.audit.gate import GateConfig, leakage_gate, null_auc_variance
from fedunlearn.common.audit.local import comparison_sets, local_leakage_audit
from fedunlearn.common.audit.signals import compute_signals, torch_logits
from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import DataError
from fedunlearn.common.models import Classifier, ModelSpec, build_model
from fedunlearn.common.training import TrainConfig, accuracy, train

CPU = torch.device("cpu")


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
    assert set(audit.attacks) == set(ATTACKS.names())
    assert (audit.forget_size, audit.holdout_size) == (150, 150)
    assert audit.forget_accuracy == 100.0
    assert audit.holdout_accuracy == pytest.approx(accuracy(model, nonmembers, device=CPU))
    assert audit.holdout_accuracy < 100.0
    auc, se = audit.attacks["loss"].auc, math.sqrt(null_auc_variance(150, 150))
    assert auc > 0.5 + 2 * se, f"loss attack AUC {auc:.3f} (se {se:.3f}) does not see the memorisation"
    assert all(0.0 <= a.tpr_at_1pct_fpr <= 100.0 for a in audit.attacks.values())


def test_an_audit_of_one_distribution_against_itself_is_chance(
    memorised: tuple[Classifier, LabeledData, LabeledData],
) -> None:
    model, _, nonmembers = memorised
    same = local_leakage_audit(torch_logits(model, device=CPU), nonmembers, nonmembers)
    assert all(a.auc == pytest.approx(0.5) for a in same.attacks.values())
    assert same.forget_accuracy == same.holdout_accuracy
    # two disjoint halves of unseen data: both non-members, so the attack is at chance within its noise
    first, second = nonmembers.subset(torch.arange(75)), nonmembers.subset(torch.arange(75, 150))
    halves = local_leakage_audit(torch_logits(model, device=CPU), first, second)
    for name, figures in halves.attacks.items():
        assert abs(figures.auc - 0.5) < 3 * math.sqrt(null_auc_variance(75, 75)), name


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
    sets = comparison_sets(holdout, "class", (3,), seed=0)
    assert len(sets.nonmembers) == int((holdout.y == 3).sum()) > 0
    assert bool((sets.nonmembers.y == 3).all())
    # other digits, scored against the label 3 they never carry
    assert len(sets.accuracy_reference) == len(holdout) - len(sets.nonmembers)
    assert bool((sets.accuracy_reference.y == 3).all())
    assert not bool(torch.isin(sets.accuracy_reference.ids, sets.nonmembers.ids).any())
    sample = comparison_sets(holdout, "sample")
    assert sample.nonmembers is holdout and sample.accuracy_reference is holdout


def test_a_model_retrained_without_the_class_passes_the_class_gate_and_the_original_fails(
    class_three: tuple[LabeledData, LabeledData, LabeledData],
) -> None:
    members, forget, holdout = class_three
    sets = comparison_sets(holdout, "class", (3,), seed=0)
    retrained, original = _fitted(members.subset(members.y != 3)), _fitted(members)
    verdicts = {}
    for name, model in (("retrained", retrained), ("original", original)):
        audit = local_leakage_audit(torch_logits(model, device=CPU), forget, sets.nonmembers,
                                    accuracy_reference=sets.accuracy_reference)
        verdicts[name] = leakage_gate({"client": audit}, 0.0, GateConfig(attacks=("loss",)), looks=1)
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




# --- reference-model attacks on real models: the gate fails the do-nothing model, passes retrain ----------


@pytest.fixture(scope="module")
def memorising_world() -> dict[str, object]:
    """Digits: an MLP fitted hard to 300 members (100 of which ask to be forgotten), the same recipe
    retrained on the other 200, and 8 reference models trained on public digits no member is in."""
    digits = load_dataset("digits")
    public, private = digits.train.subset(torch.arange(700)), digits.train.subset(torch.arange(700, 1000))
    forget, kept = private.subset(torch.arange(100)), private.subset(torch.arange(100, 300))
    recipe = TrainConfig(epochs=60, batch_size=32, lr=3e-3)

    def fitted(data: LabeledData, seed: int) -> Classifier:
        model = build_model(ModelSpec("mlp", 1, 8, 10), seed=seed)
        return train(model, data, recipe, device=CPU, generator=torch.Generator().manual_seed(seed))  # type: ignore[return-value]

    draws = [public.subset(torch.randperm(len(public), generator=torch.Generator().manual_seed(k))[:300])
             for k in range(8)]
    return {"original": fitted(private, 0), "retrained": fitted(kept, 0), "forget": forget,
            "nonmembers": digits.test.subset(torch.arange(300)),
            "references": [fitted(d, 100 + k) for k, d in enumerate(draws)]}


def _calibration(references: list[Classifier], data: LabeledData) -> Calibration:
    return Calibration.offline(np.stack([compute_signals(m, data, device=CPU).logit_confidence for m in references]))


def test_the_strong_gate_fails_a_memorising_model_and_passes_its_retrained_twin(
    memorising_world: dict[str, object],
) -> None:
    forget, nonmembers = memorising_world["forget"], memorising_world["nonmembers"]
    references = memorising_world["references"]
    assert isinstance(forget, LabeledData) and isinstance(nonmembers, LabeledData) and isinstance(references, list)
    calibration = (_calibration(references, forget), _calibration(references, nonmembers))
    verdicts = {}
    for name in ("original", "retrained"):
        model = memorising_world[name]
        assert isinstance(model, Classifier)
        audit = local_leakage_audit(torch_logits(model, device=CPU), forget, nonmembers, calibration=calibration)
        assert set(audit.attacks) == set(ATTACKS.names()) | set(CALIBRATED_ATTACKS.names())
        verdicts[name] = leakage_gate({"client": audit}, 0.0, GateConfig(), looks=6)
    original, retrained = verdicts["original"], verdicts["retrained"]
    assert not original.passed and any(r.startswith(("lira", "rmia")) for r in original.reasons), original.reasons
    assert retrained.passed, retrained.reasons
    assert original.attacks["lira"].auc > retrained.attacks["lira"].auc + 0.1
