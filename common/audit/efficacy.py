"""MIA-Efficacy: the SVC-on-confidence metric of the l1-sparse and SalUn papers.

Reported so that our tables can be read next to theirs. An RBF support-vector
classifier learns, from the true-label confidence p_y alone, what a training
member looks like (retain samples) versus an unseen sample (test samples); the
metric is the share of forget samples it calls unseen. Higher is not simply
better: a model retrained without the forget set still finds many random
forget samples easy, so the number is read as a gap to that retrain value.
"""

from __future__ import annotations

import numpy as np

from fedunlearn.common.audit.signals import Signals
from fedunlearn.common.errors import ConfigError

__all__ = ["DEFAULT_MAX_TRAIN", "mia_efficacy"]

# Per group. An RBF SVC costs roughly quadratic time in its training size, and
# a one-dimensional feature needs no more than a few thousand points.
DEFAULT_MAX_TRAIN = 2000


def _balanced_training_set(
    retain: Signals, test: Signals, rng: np.random.Generator, max_train: int
) -> tuple[np.ndarray, np.ndarray]:
    """(2n, 1) confidences and (2n,) labels (1 = member), n = min(|retain|, |test|, max_train).

    Equal group sizes keep the SVC from learning the base rate instead of the signal.
    """
    n = min(len(retain), len(test), max_train)
    members = rng.choice(retain.confidences, size=n, replace=False)
    nonmembers = rng.choice(test.confidences, size=n, replace=False)
    features = np.concatenate([members, nonmembers])[:, None]
    labels = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    return features, labels


def mia_efficacy(
    retain: Signals,
    test: Signals,
    forget: Signals,
    *,
    seed: int = 0,
    max_train: int = DEFAULT_MAX_TRAIN,
) -> float:
    """Percent (0-100) of forget samples the SVC predicts as non-members.

    retain: members to learn from; test: non-members to learn from (for class
    forgetting, only the remaining classes); forget: the samples judged.
    ``seed`` fixes the balancing subsample; the SVC itself is deterministic.
    """
    for group, signals in (("retain", retain), ("test", test), ("forget", forget)):
        if len(signals) == 0:
            raise ConfigError(f"MIA-Efficacy needs a non-empty {group} set")
    if max_train < 1:
        raise ConfigError(f"max_train must be >= 1, got {max_train}")
    features, labels = _balanced_training_set(retain, test, np.random.default_rng(seed), max_train)
    from sklearn.svm import SVC  # here: scikit-learn takes most of a second to import, and nodes never need it

    svc = SVC(C=3.0, kernel="rbf", gamma="auto").fit(features, labels)
    predicted = svc.predict(forget.confidences[:, None])
    return 100.0 * float(np.mean(predicted == 0))
