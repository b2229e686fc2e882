"""Plots of a run: test accuracy per round, forget AUC per unlearning round, and (simulation) ROC.

The ROC needs per-sample scores, which never leave a real node; only a
simulation's world, which filed the requests and holds the dataset, can draw it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from fedunlearn.common.audit import PRIMARY_ATTACK, attack_scores, compute_signals, roc_curve
from fedunlearn.common.data.tensors import LabeledData, concat
from fedunlearn.common.models import ModelSpec, model_with_weights
from fedunlearn.common.world import SimulatedWorld
from fedunlearn.server.run import RunRecord

__all__ = ["plot_run"]


def _accuracy(path: Path, record: RunRecord) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    rounds, ta = zip(*record.accuracy, strict=True)
    ax.plot(rounds, ta, marker=".", label="global model")
    for phase in record.phases:
        ax.axvline(phase.after_round + 0.5, color="tab:red", linestyle="--", label="unlearning phase")
    ax.set(xlabel="round", ylabel="test accuracy (%)", title="Test accuracy per round")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _forget_auc(path: Path, record: RunRecord) -> None:
    phase = record.phases[-1]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    points = [(k, g.forget_auc, g.ci) for k, g in enumerate(phase.gate_history, start=1)
              if g.forget_auc is not None and g.ci is not None]
    ks = [k for k, _, _ in points]
    ax.plot(ks, [auc for _, auc, _ in points], marker="o", label="unlearned (pooled)")
    ax.fill_between(ks, [ci[0] for _, _, ci in points if ci], [ci[1] for _, _, ci in points if ci], alpha=0.2,
                    label="interval at the gate's level")
    for name, style in (("original", ":"), ("federated_retrain", "--")):
        figures = phase.baselines.get(name)
        if figures is not None and figures.forget_auc is not None:
            ax.axhline(figures.forget_auc, linestyle=style, color="gray", label=name)
    ax.axhline(0.5, color="black", linewidth=0.8)
    ax.set(xlabel="unlearning round", ylabel="forget-set AUC (deciding attack)",
           title="Forget AUC per unlearning round")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _ground_truth(world: SimulatedWorld, record: RunRecord) -> tuple[LabeledData, LabeledData]:
    """Forget samples (from the dataset, by the ids the world filed) and the filing nodes' non-members."""
    phase = record.phases[-1]
    ids = torch.tensor(sorted(i for f in world.filed for i in f.forget_ids), dtype=torch.int64)
    forget = world.bundle.train.where_ids(ids, keep=True)
    holdouts = [world.node(int(p)).holdout() for p in sorted({r.partition for r in phase.requests})]
    nonmembers = concat(*holdouts)
    if phase.forgotten_classes:
        nonmembers = nonmembers.where_classes(phase.forgotten_classes, keep=True)
    return forget, nonmembers


def _roc(path: Path, world: SimulatedWorld, record: RunRecord, spec: ModelSpec) -> None:
    forget, nonmembers = _ground_truth(world, record)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, state in record.phases[-1].states.items():
        model = model_with_weights(spec, state)
        cpu = torch.device("cpu")
        members, others = compute_signals(model, forget, device=cpu), compute_signals(model, nonmembers, device=cpu)
        fpr, tpr = roc_curve(attack_scores(PRIMARY_ATTACK, members), attack_scores(PRIMARY_ATTACK, others))
        ax.plot(fpr, tpr, label=name)
    ax.plot([1e-3, 1], [1e-3, 1], color="black", linewidth=0.8)
    ax.set(xscale="log", yscale="log", xlim=(1e-3, 1), ylim=(1e-3, 1), xlabel="false positive rate",
           ylabel="true positive rate", title=f"{PRIMARY_ATTACK} attack, forget vs non-members")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_run(run_dir: Path, record: RunRecord, *, world: SimulatedWorld | None, spec: ModelSpec) -> dict[str, str]:
    plots = {"accuracy": "accuracy.png"}
    _accuracy(run_dir / plots["accuracy"], record)
    if record.phases and record.phases[-1].gate_history:
        plots["forget_auc"] = "forget_auc.png"
        _forget_auc(run_dir / plots["forget_auc"], record)
        if world is not None and world.filed:
            plots["roc"] = "roc.png"
            _roc(run_dir / plots["roc"], world, record, spec)
    return plots
