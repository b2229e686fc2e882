"""The bench's white-box and deep-forgetting checks of one model (``common/audit/whitebox.py``).

Members are the seed's forget set and non-members the test samples of the classes in it, as for the
output attacks, both capped at ``CAP`` by a seeded draw so that every model of a seed is probed on the
very same samples. A linear probe reads the stem and the penultimate features, the gradient-norm
attack the per-sample gradients; a model that forgot only at its outputs passes the output attacks
and fails these. For class forgetting, the relearning check fine-tunes a copy on ``RELEARN_FEW``
samples of the class among ``RELEARN_RETAIN`` retain samples and counts the epochs until its accuracy
on the class's test samples is back at ``RELEARN_SHARE`` of the original's: retrain sets the pace of
a model that never knew the class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fedunlearn.common.audit.report import GAP_METRICS
from fedunlearn.common.audit.whitebox import gradient_norm_attack, linear_probe, relearn_epochs
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.models import Classifier
from fedunlearn.common.training import accuracy

__all__ = ["AUC_CHECKS", "CAP", "RELEARN_EPOCHS", "RELEARN_FEW", "RELEARN_RETAIN", "RELEARN_SHARE", "UNMEASURED",
           "WHITE_BOX_FIGURES", "WhiteBoxSets", "deep_gap", "headline", "powerless", "white_box"]

CAP = 500  # members and non-members each
RELEARN_FEW, RELEARN_RETAIN = 20, 200  # samples of the forgotten class, of the retain set
RELEARN_SHARE, RELEARN_EPOCHS = 0.9, 10  # the target, as a share of the original's class accuracy; the budget
# ``headline``'s figures; relearning epochs may be None (never back within the budget) and stay per seed
WHITE_BOX_FIGURES = ("probe_stem_auc", "probe_penultimate_auc", "gradient_norm_auc", "gradient_norm_tpr_at_1pct_fpr")


# the relearning figures of a seed whose original never learned the class: nothing to relearn towards
UNMEASURED: Mapping[str, Any] = {"epochs": None, "threshold": None, "curve": [],
                                 "note": "not measured: the original gets none of the class's test samples right"}


def _draw(data: LabeledData, count: int, generator: torch.Generator) -> LabeledData:
    return data.subset(torch.randperm(len(data), generator=generator)[:count])


@dataclass(frozen=True)
class WhiteBoxSets:
    """One seed's samples for every model's white-box checks; ``relearn`` only for class forgetting."""

    members: LabeledData
    nonmembers: LabeledData
    relearn: tuple[LabeledData, LabeledData, LabeledData] | None  # few of the class, retain, class test

    @classmethod
    def draw(cls, *, forget: LabeledData, retain: LabeledData, test: LabeledData,
             forgotten_classes: tuple[int, ...], seed: int) -> WhiteBoxSets:
        generator = torch.Generator().manual_seed(seed)
        classes = tuple(int(c) for c in torch.unique(forget.y))
        nonmembers = test.where_classes(classes, keep=True)
        relearn = None
        if forgotten_classes:
            relearn = (_draw(forget, RELEARN_FEW, generator), _draw(retain, RELEARN_RETAIN, generator), nonmembers)
        return cls(_draw(forget, CAP, generator), _draw(nonmembers, CAP, generator), relearn)

    def relearn_target(self, original: Classifier, device: torch.device) -> float | None:
        """The class accuracy the relearning check waits for: a share of the original's; None without class
        forgetting, or where the original itself gets none of the class's test samples right (or has none)."""
        if self.relearn is None:
            return None
        known = accuracy(original, self.relearn[2], device=device)
        return RELEARN_SHARE * known if known > 0 else None


def white_box(model: Classifier, sets: WhiteBoxSets, *, target: float | None, device: torch.device,
              seed: int) -> dict[str, Any]:
    """probe_stem, probe_penultimate, gradient_norm and (class forgetting) relearn, each as a dict;
    ``target``: ``WhiteBoxSets.relearn_target``, None where there is nothing to relearn towards."""
    figures: dict[str, Any] = {
        f"probe_{layer}": linear_probe(model, sets.members, sets.nonmembers, layer=layer, device=device,
                                       seed=seed).to_dict()
        for layer in ("stem", "penultimate")
    }
    figures["gradient_norm"] = gradient_norm_attack(model, sets.members, sets.nonmembers, device=device).to_dict()
    if sets.relearn is not None:
        few, retain, probe = sets.relearn
        figures["relearn"] = UNMEASURED if target is None else relearn_epochs(
            model, few, retain, probe, threshold=target, max_epochs=RELEARN_EPOCHS, device=device, seed=seed).to_dict()
    return figures


def headline(figures: Mapping[str, Any]) -> dict[str, float]:
    """The figures a mean over seeds makes sense of: both probes' AUC, the gradient attack's AUC and TPR."""
    return {"probe_stem_auc": figures["probe_stem"]["auc"],
            "probe_penultimate_auc": figures["probe_penultimate"]["auc"],
            "gradient_norm_auc": figures["gradient_norm"]["auc"],
            "gradient_norm_tpr_at_1pct_fpr": figures["gradient_norm"]["tpr_at_1pct_fpr"]}


AUC_CHECKS = ("probe_stem_auc", "probe_penultimate_auc", "gradient_norm_auc")


def deep_gap(output_gap: float, figures: Mapping[str, Any], retrain: Mapping[str, Any]) -> float:
    """avg_gap carried inside the model: the mean |x - retrain| over avg_gap's four output figures (whose mean
    is ``output_gap``) and the three white-box AUCs in points (x 100, avg_gap's unit). A model that matches
    retraining at its outputs while its features still tell the forget set apart scores worse than on
    avg_gap; ``figures`` and ``retrain``: ``white_box`` of the model and of retrain on one seed."""
    model, gold = headline(figures), headline(retrain)
    inner = [100 * abs(model[key] - gold[key]) for key in AUC_CHECKS]
    return (len(GAP_METRICS) * output_gap + sum(inner)) / (len(GAP_METRICS) + len(inner))


def powerless(original: Mapping[str, Any], retrain: Mapping[str, Any], members: int, nonmembers: int) -> list[str]:
    """The AUC checks whose mean on the original is not two standard errors (of an AUC on groups of these
    sizes, with no signal) above retrain's: there they cannot tell a model that remembers from one that
    forgot, and a row that matches retrain proves nothing."""
    margin = 2 * math.sqrt((members + nonmembers + 1) / (12 * members * nonmembers))
    return [key for key in AUC_CHECKS if original[key] - retrain[key] < margin]
