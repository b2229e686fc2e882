"""Per-sample membership signals, computed once per model pass.

Every audit attack is a pure function of these arrays, so the same attacks grade
a torch model, an ONNX fp32 export and its int8 quantisation alike: only the
pass that produces the logits differs. All statistics are derived from the raw
logits in log space, because the members of an overfitted model have
probabilities that round to exactly 1.0 and their losses would otherwise
become 0 or their logit-confidences infinite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from scipy.special import log_softmax, logsumexp
from torch import nn

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError, NonFiniteError
from fedunlearn.common.readonly import store_read_only
from fedunlearn.common.training import predict_logits

__all__ = ["Logits", "Signals", "compute_signals", "logits_signals", "reference_statistic", "signals_from_logits",
           "torch_logits"]


def _logsumexp_excluding(logits: np.ndarray, column: np.ndarray) -> np.ndarray:
    """(N, K), (N,) -> (N,): logsumexp of each row without the entry at ``column``.

    Subtracting this from the full logsumexp gives log(1 - p) exactly, where
    log1p(-p) would already have lost everything once p rounds to 1.
    """
    masked = logits.copy()
    masked[np.arange(len(logits)), column] = -np.inf
    return np.asarray(logsumexp(masked, axis=1))


@dataclass(frozen=True, eq=False)
class Signals:
    """One model's outputs on one labelled set.

    logits: (N, K) float64, K >= 2
    labels: (N,) int64 in [0, K)

    Both are private read-only copies, so the derived properties (cached on
    first use) can never go stale.
    """

    logits: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        logits = np.array(self.logits, dtype=np.float64)
        labels = np.asarray(self.labels)
        if logits.ndim != 2 or logits.shape[1] < 2:
            raise ValueError(f"logits must be (N, K) with K >= 2 classes, got shape {logits.shape}")
        if labels.shape != (logits.shape[0],):
            raise ValueError(f"labels must be ({logits.shape[0]},) to match logits, got shape {labels.shape}")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
            raise ValueError(
                f"labels must lie in [0, {logits.shape[1]}), got range [{labels.min()}, {labels.max()}]"
            )
        if not np.isfinite(logits).all():
            raise NonFiniteError("logits contain NaN or Inf; the model diverged and cannot be audited")
        store_read_only(self, logits=logits, labels=labels)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def subset(self, index: np.ndarray) -> Signals:
        """Rows picked by an integer index or a boolean mask (no new model pass)."""
        return Signals(self.logits[index], self.labels[index])

    @cached_property
    def _rows(self) -> np.ndarray:
        return np.arange(len(self))

    @cached_property
    def log_probs(self) -> np.ndarray:
        """(N, K) log-softmax of the logits."""
        return np.asarray(log_softmax(self.logits, axis=1))

    @cached_property
    def probs(self) -> np.ndarray:
        """(N, K) softmax probabilities."""
        return np.exp(self.log_probs)

    @cached_property
    def log_one_minus_probs(self) -> np.ndarray:
        """(N, K) log(1 - p_i), finite even where p_i rounds to 1.

        Only the top class can have p > 1/2; its entry is taken from the
        logits directly, the others from log1p(-p), which is exact for p <= 1/2.
        """
        top = self.logits.argmax(axis=1)
        others = self.probs.copy()
        others[self._rows, top] = 0.0
        out = np.log1p(-others)
        full = logsumexp(self.logits, axis=1)
        out[self._rows, top] = _logsumexp_excluding(self.logits, top) - full
        return out

    @cached_property
    def losses(self) -> np.ndarray:
        """(N,) per-sample cross-entropy -log p_y = softplus(-logit_confidence).

        Through the logit confidence rather than log-softmax, so memorised samples
        (loss ~1e-20) keep distinct losses instead of all rounding to 0 and tying
        in the loss attack.
        """
        return np.logaddexp(0.0, -self.logit_confidence)

    @cached_property
    def confidences(self) -> np.ndarray:
        """(N,) probability of the true label, p_y."""
        return np.exp(-self.losses)

    @cached_property
    def correct(self) -> np.ndarray:
        """(N,) bool: top-1 prediction equals the label."""
        return self.logits.argmax(axis=1) == self.labels

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy in percent (0-100); NaN for an empty set."""
        return 100.0 * float(self.correct.mean()) if len(self) else float("nan")

    @cached_property
    def entropy(self) -> np.ndarray:
        """(N,) Shannon entropy of the prediction, in nats (label-blind)."""
        return -(self.probs * self.log_probs).sum(axis=1)

    @cached_property
    def modified_entropy(self) -> np.ndarray:
        """(N,) Song & Mittal's label-aware entropy.

        Mentr = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i): small when
        the model is confidently right, large when it is confidently wrong,
        which plain entropy cannot tell apart.
        """
        log_rest = self.log_one_minus_probs
        true_part = np.exp(log_rest[self._rows, self.labels]) * self.losses
        others = self.probs * log_rest
        others[self._rows, self.labels] = 0.0
        return true_part - others.sum(axis=1)

    @cached_property
    def logit_confidence(self) -> np.ndarray:
        """(N,) log p_y - log(1 - p_y) = z_y - logsumexp_{j != y} z_j.

        Taken from the logits, so a member with logits [50, 0, 0] scores about
        49.3 rather than inf; this is the statistic LiRA models as Gaussian.
        """
        return self.logits[self._rows, self.labels] - _logsumexp_excluding(self.logits, self.labels)


def _to_numpy(array: torch.Tensor | np.ndarray) -> np.ndarray:
    """Any backend's array on the host; float tensors widened first (numpy has no bfloat16)."""
    if isinstance(array, torch.Tensor):
        tensor = array.detach().cpu()
        return (tensor.double() if tensor.is_floating_point() else tensor).numpy()
    return np.asarray(array)


def signals_from_logits(
    logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
) -> Signals:
    """(N, K) logits and (N,) labels from any backend (torch, ONNX Runtime) -> Signals."""
    return Signals(_to_numpy(logits), _to_numpy(labels))


Logits = Callable[[torch.Tensor], torch.Tensor]  # (N, C, H, W) model inputs -> (N, K) logits


def torch_logits(model: nn.Module, *, device: torch.device) -> Logits:
    """A torch model as an audit sees it: inputs in, logits out (eval mode; an ONNX Runtime session can
    be the same, see ``common.edge.scoring``)."""
    return lambda x: predict_logits(model, x, device=device)


def logits_signals(logits_of: Logits, data: LabeledData) -> Signals:
    """One pass of any backend over ``data``."""
    if len(data) == 0:
        raise ConfigError("cannot compute membership signals of an empty set of samples")
    return signals_from_logits(logits_of(data.x), data.y)


def compute_signals(model: nn.Module, data: LabeledData, *, device: torch.device) -> Signals:
    """One eval-mode torch pass over ``data``; the model is left as it was found."""
    return logits_signals(torch_logits(model, device=device), data)


def reference_statistic(references: Sequence[nn.Module], data: LabeledData, *, device: torch.device) -> np.ndarray:
    """(K, N) logit confidence of each reference model on each sample: what LiRA and RMIA calibrate with,
    computed the same way by a node on its samples and by the server on the exemplars it lends."""
    return np.stack([compute_signals(model, data, device=device).logit_confidence for model in references])
