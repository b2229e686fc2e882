"""Per-sample signals: hand-computed values, numerical stability, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fedunlearn.common.audit.signals import Signals, compute_signals, signals_from_logits
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError, NonFiniteError


def _from_probs(probs: list[list[float]], labels: list[int]) -> Signals:
    """Logits whose softmax is exactly ``probs`` (log p is one valid choice)."""
    return signals_from_logits(np.log(np.array(probs)), np.array(labels))


def test_modified_entropy_hand_computed() -> None:
    signals = _from_probs([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]], [0, 1])
    right = -0.3 * math.log(0.7) - 0.2 * math.log(0.8) - 0.1 * math.log(0.9)
    wrong = -0.8 * math.log(0.2) - 0.7 * math.log(0.3) - 0.1 * math.log(0.9)
    np.testing.assert_allclose(signals.modified_entropy, [right, wrong])


def test_basic_signals_hand_computed() -> None:
    signals = _from_probs([[0.7, 0.2, 0.1], [0.5, 0.25, 0.25]], [0, 2])
    np.testing.assert_allclose(signals.confidences, [0.7, 0.25])
    np.testing.assert_allclose(signals.losses, [-math.log(0.7), math.log(4)])
    np.testing.assert_allclose(signals.probs.sum(axis=1), 1.0)
    np.testing.assert_array_equal(signals.correct, [True, False])
    assert signals.accuracy == 50.0
    entropy = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    np.testing.assert_allclose(signals.entropy, [entropy, 1.5 * math.log(2)])
    np.testing.assert_allclose(signals.logit_confidence, [math.log(0.7 / 0.3), math.log(0.25 / 0.75)])


def test_losses_match_torch_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=generator) * 5
    labels = torch.randint(0, 10, (64,), generator=generator)
    expected = F.cross_entropy(logits.double(), labels, reduction="none").numpy()
    np.testing.assert_allclose(signals_from_logits(logits, labels).losses, expected, rtol=1e-12)


def test_extreme_logits_stay_finite_and_exact() -> None:
    signals = signals_from_logits(np.array([[50.0, 0.0, 0.0], [0.0, 50.0, 0.0]]), np.array([0, 0]))
    # log p_y - log(1 - p_y) = 50 - log 2 for the member; its p_y rounds to 1.0
    np.testing.assert_allclose(signals.logit_confidence, [50.0 - math.log(2), -50.0])
    assert signals.confidences[0] == 1.0
    for values in (signals.losses, signals.entropy, signals.modified_entropy, signals.logit_confidence):
        assert np.isfinite(values).all()
    # confidently wrong: Mentr ~ -log p_y - log(1 - p_1) = 50 + (50 - log 2)
    assert signals.modified_entropy[1] == pytest.approx(100.0 - math.log(2))
    assert signals.modified_entropy[0] == pytest.approx(0.0, abs=1e-20)


def test_uniform_prediction_has_entropy_log_k() -> None:
    signals = signals_from_logits(np.zeros((3, 4)), np.array([0, 1, 3]))
    np.testing.assert_allclose(signals.entropy, math.log(4))


def test_signals_are_private_read_only_copies() -> None:
    logits = np.array([[1.0, 2.0]])
    signals = signals_from_logits(logits, np.array([1]))
    logits[0, 0] = 100.0
    assert signals.logits[0, 0] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        signals.logits[0, 0] = 5.0


def test_subset_keeps_rows() -> None:
    signals = _from_probs([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]], [0, 1, 1])
    picked = signals.subset(np.array([False, True, True]))
    assert len(picked) == 2
    np.testing.assert_allclose(picked.confidences, [0.6, 0.5])


@pytest.mark.parametrize(
    ("logits", "labels", "error", "match"),
    [
        (np.zeros((3, 2)), np.zeros(2, dtype=int), ValueError, r"labels must be \(3,\)"),
        (np.zeros(3), np.zeros(3, dtype=int), ValueError, r"\(N, K\)"),
        (np.zeros((3, 1)), np.zeros(3, dtype=int), ValueError, "K >= 2"),
        (np.zeros((2, 2)), np.array([0, 2]), ValueError, r"\[0, 2\)"),
        (np.zeros((2, 2)), np.array([0.0, 1.5]), ValueError, "integers"),
        (np.array([[np.nan, 0.0]]), np.array([0]), NonFiniteError, "NaN"),
    ],
)
def test_malformed_inputs_are_rejected(
    logits: np.ndarray, labels: np.ndarray, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        signals_from_logits(logits, labels)


def test_compute_signals_is_one_model_pass() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(5, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    data = LabeledData(x, torch.tensor([0, 1, 2, 0, 1]), torch.arange(5))
    signals = compute_signals(model, data, device=torch.device("cpu"))
    with torch.no_grad():
        np.testing.assert_allclose(signals.logits, model(x).double().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(signals.labels, [0, 1, 2, 0, 1])


def test_compute_signals_refuses_an_empty_set() -> None:
    no_ids = torch.zeros(0, dtype=torch.int64)
    empty = LabeledData(torch.zeros(0, 1, 2, 2), no_ids, no_ids)
    with pytest.raises(ConfigError, match="empty"):
        compute_signals(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), empty, device=torch.device("cpu"))
