"""Audit reports on hand-built logits whose metrics can be worked out on paper."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from fedunlearn.common.audit.attacks import ATTACKS
from fedunlearn.common.audit.report import GAP_METRICS, AuditReport, audit_from_signals, audit_model, avg_gap
from fedunlearn.common.audit.signals import Signals, signals_from_logits, torch_logits
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError


def _rows(spec: list[tuple[int, int, float]], k: int = 3) -> Signals:
    """(label, predicted class, margin) per sample: the predicted logit leads the rest by ``margin``."""
    logits = np.zeros((len(spec), k))
    for i, (_, predicted, margin) in enumerate(spec):
        logits[i, predicted] = margin
    return signals_from_logits(logits, np.array([label for label, _, _ in spec]))


# Random forgetting. Forget: 3 confidently right (loss 0.03), 1 confidently wrong (loss 5.0).
# Test: 4 unsure but right (loss 0.55), 1 wrong (loss 1.55). Loss attack: the 3 right forget
# samples beat all 5 test samples, the wrong one none: AUC 15/20; above every test sample: 3/4.
RETAIN = _rows([(0, 0, 5.0), (1, 1, 5.0), (2, 2, 5.0), (0, 0, 5.0)])
FORGET = _rows([(0, 0, 5.0), (1, 1, 5.0), (2, 2, 5.0), (1, 0, 5.0)])
TEST = _rows([(0, 0, 1.0), (1, 1, 1.0), (2, 2, 1.0), (0, 0, 1.0), (1, 2, 1.0)])


def test_random_forgetting_report_hand_computed() -> None:
    report = audit_from_signals(retain=RETAIN, forget=FORGET, test=TEST)
    assert (report.ua, report.ra, report.ta) == (25.0, 100.0, 80.0)
    assert report.mia_auc == pytest.approx(0.75)
    assert report.tpr_at_1pct_fpr == report.tpr_at_01pct_fpr == 75.0  # 5 non-members: TPR at zero FPR
    assert report.mia_efficacy == 25.0  # only the confidently wrong forget sample looks unseen
    assert [a.name for a in report.attacks] == ATTACKS.names()
    fpr, tpr = report.roc
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)


def test_class_forgetting_compares_with_the_forgotten_class_only() -> None:
    # A retrained model never saw class 2: it spreads it over classes 0 and 1, on the forget
    # set and on class-2 test samples alike, so no attack can tell them apart.
    unseen = [(2, 0, 1.0), (2, 1, 0.5)]
    retain = _rows([(0, 0, 4.0), (1, 1, 4.0)])
    test = _rows([(0, 0, 2.0), (1, 1, 2.0), (1, 0, 2.0), *unseen])
    report = audit_from_signals(retain=retain, forget=_rows(unseen), test=test, forgotten_classes=(2,))
    assert report.ua == 100.0
    assert report.ta == pytest.approx(200 / 3)  # the class-2 test samples are left out
    assert {a.auc for a in report.attacks} == {0.5}
    assert report.mia_auc == 0.5


def test_to_dict_is_plain_json() -> None:
    data = audit_from_signals(retain=RETAIN, forget=FORGET, test=TEST).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {*GAP_METRICS, "mia_auc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr", "attacks"}
    assert set(data["attacks"]) == set(ATTACKS.names())
    assert data["attacks"]["loss"] == {"auc": 0.75, "tpr_at_1pct_fpr": 75.0, "tpr_at_01pct_fpr": 75.0}
    numbers = [v for k, v in data.items() if k != "attacks"]
    numbers += [v for entry in data["attacks"].values() for v in entry.values()]
    assert all(type(v) is float for v in numbers)


def test_audit_model_matches_the_signals_of_one_pass() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    generator = torch.Generator().manual_seed(0)

    def data(n: int) -> LabeledData:
        x = torch.randn(n, 1, 2, 2, generator=generator)
        return LabeledData(x, torch.randint(0, 3, (n,), generator=generator), torch.arange(n))

    retain, forget, test = data(30), data(10), data(20)
    report = audit_model(torch_logits(model, device=torch.device("cpu")), retain=retain, forget=forget, test=test)
    with torch.no_grad():
        expected = audit_from_signals(
            retain=signals_from_logits(model(retain.x), retain.y),
            forget=signals_from_logits(model(forget.x), forget.y),
            test=signals_from_logits(model(test.x), test.y),
        )
    assert report.to_dict() == expected.to_dict()


def _report(ua: float, ra: float, ta: float, mia_efficacy: float) -> AuditReport:
    empty = np.zeros(0)
    return AuditReport(ua, ra, ta, mia_efficacy, 0.5, 1.0, 0.1, (), (empty, empty))


def test_avg_gap_is_mean_absolute_difference() -> None:
    retrain = _report(ua=0.0, ra=100.0, ta=80.0, mia_efficacy=50.0)
    assert avg_gap(_report(ua=10.0, ra=90.0, ta=80.0, mia_efficacy=30.0), retrain) == 10.0
    assert avg_gap(retrain, retrain) == 0.0


def test_empty_forget_set_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="forget set is empty"):
        audit_from_signals(retain=RETAIN, forget=FORGET.subset(np.zeros(4, dtype=bool)), test=TEST)


def test_test_set_without_the_forget_classes_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"no samples of the forget set's classes \[2\]"):
        audit_from_signals(retain=RETAIN, forget=_rows([(2, 2, 1.0)]), test=_rows([(0, 0, 1.0)]))


def test_forgotten_class_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"forgotten_classes must lie in \[0, 3\)"):
        audit_from_signals(retain=RETAIN, forget=FORGET, test=TEST, forgotten_classes=(3,))


def test_signals_of_different_models_are_rejected() -> None:
    with pytest.raises(ValueError, match="number of classes"):
        audit_from_signals(retain=_rows([(0, 0, 1.0)], k=4), forget=FORGET, test=TEST)
