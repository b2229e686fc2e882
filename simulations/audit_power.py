"""How much the gate can see: power curves and the choice of reference models, measured.

Centralised, on a model trained to memorise its training pool:

* Power curves. For each forget-set size n, draw many forget sets of n members
  and compare them with sealed non-members; how often does the gate fail the
  do-nothing model (power), and how often does it fail a model that never saw
  the drawn samples (false alarms)? The same gate decides once with the
  population ``loss`` attack and once with the reference-model attacks, at the
  same false-alarm rate.
* Reference design. The federation's references are offline: trained on
  public data that no client holds (``server.references``). The alternative,
  LiRA's own design, trains each reference on a random half of the clients'
  data, so every audited sample is IN for about half of them (online LiRA).
  Both are measured here on the same target model and the same audits.

Writes ``power.json`` (with the commit and the command) for
``simulations.audit_docs`` to render.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fedunlearn.common.audit.calibrated import CALIBRATED_ATTACKS, Calibration
from fedunlearn.common.audit.gate import GateConfig, leakage_gate
from fedunlearn.common.audit.local import LocalAudit, local_leakage_audit
from fedunlearn.common.audit.roc import roc_auc, tpr_at_fpr
from fedunlearn.common.audit.signals import Signals, compute_signals, torch_logits
from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.models import Classifier, ModelSpec, build_model
from fedunlearn.common.provenance import git_commit
from fedunlearn.common.training import TrainConfig, train

__all__ = ["PowerConfig", "main", "run_power"]

CPU = torch.device("cpu")


@dataclass(frozen=True)
class PowerConfig:
    dataset: str = "fashion-mnist"
    model: str = "cnn"
    pool: int = 2000  # the target model's training set (the members)
    outsiders: int = 1000  # never trained on: the non-members the audits compare with, and the false alarms
    public: int = 4000  # no target model sees it: the offline references' data
    references: int = 8
    epochs: int = 30
    lr: float = 1e-3
    sizes: tuple[int, ...] = (10, 50, 200)
    draws: int = 40
    nonmembers: int = 200  # sealed non-members per audit
    looks: int = 6  # the federation's default budget: 3 rounds x 2 attempts
    seed: int = 0


def _fitted(spec: ModelSpec, data: LabeledData, config: PowerConfig, seed: int) -> Classifier:
    model = build_model(spec, seed=seed)
    recipe = TrainConfig(epochs=config.epochs, batch_size=32, lr=config.lr, schedule="constant")
    train(model, data, recipe, device=CPU, generator=torch.Generator().manual_seed(seed))
    return model


def _statistics(models: list[Classifier], data: LabeledData) -> np.ndarray:
    return np.stack([compute_signals(m, data, device=CPU).logit_confidence for m in models])


def _split(config: PowerConfig) -> tuple[ModelSpec, LabeledData, LabeledData, LabeledData]:
    bundle = load_dataset(config.dataset)
    order = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(config.seed))
    cut = np.cumsum([config.pool, config.outsiders, config.public])
    pool, outsiders, public = (bundle.train.subset(order[a:b]) for a, b in zip([0, *cut[:-1]], cut, strict=True))
    c, h, _ = bundle.input_shape
    return ModelSpec(config.model, c, h, bundle.num_classes), pool, outsiders, public


def _verdict(audit: LocalAudit, attacks: tuple[str, ...], looks: int) -> bool:
    """True when the gate deciding with ``attacks`` fails the audited model."""
    return not leakage_gate({"client": audit}, 0.0, GateConfig(attacks=attacks), looks=looks).passed


def _fail_rates(model: Classifier, members: LabeledData, nonmembers: LabeledData, calibration: Calibration,
                nonmember_calibration: Calibration, config: PowerConfig, size: int) -> dict[str, float]:
    """Share of ``draws`` audits of ``size`` drawn members in which each gate fails ``model``."""
    rng = np.random.default_rng(config.seed + size)
    logits = torch_logits(model, device=CPU)
    failures = {"loss": 0, "reference": 0}
    for _ in range(config.draws):
        pick = rng.choice(len(members), size, replace=False)
        other = rng.choice(len(nonmembers), config.nonmembers, replace=False)
        audit = local_leakage_audit(logits, members.subset(torch.as_tensor(pick)),
                                    nonmembers.subset(torch.as_tensor(other)),
                                    calibration=(calibration.subset(pick), nonmember_calibration.subset(other)))
        failures["loss"] += _verdict(audit, ("loss",), config.looks)
        failures["reference"] += _verdict(audit, ("lira", "rmia"), config.looks)
    return {name: count / config.draws for name, count in failures.items()}


def _attack_readings(target: Signals, members: np.ndarray, calibration: Calibration) -> dict[str, dict[str, float]]:
    """Every reference attack (and loss) on the whole pool vs the outsiders, ``members`` a boolean mask."""
    phi = target.logit_confidence
    readings = {}
    for name in CALIBRATED_ATTACKS.names():
        scores_in, scores_out = CALIBRATED_ATTACKS.get(name)(phi[members], calibration.subset(members),
                                                              phi[~members], calibration.subset(~members))
        readings[name] = _reading(scores_in, scores_out)
    readings["loss"] = _reading(-target.losses[members], -target.losses[~members])
    return readings


def _reading(scores_in: np.ndarray, scores_out: np.ndarray) -> dict[str, float]:
    return {"auc": roc_auc(scores_in, scores_out), "tpr_at_1pct_fpr": 100 * tpr_at_fpr(scores_in, scores_out, 0.01)}


def run_power(config: PowerConfig) -> dict[str, object]:
    torch.set_num_threads(1)
    spec, pool, outsiders, public = _split(config)
    started = time.perf_counter()
    target = _fitted(spec, pool, config, config.seed)
    never = _fitted(spec, public.subset(torch.arange(config.pool)), config, config.seed + 1)  # saw none of the pool
    everyone = LabeledData(torch.cat([pool.x, outsiders.x]), torch.cat([pool.y, outsiders.y]),
                           torch.cat([pool.ids, outsiders.ids]))
    is_member = np.arange(len(everyone)) < len(pool)
    rng = np.random.default_rng(config.seed)
    offline = [_fitted(spec, public.subset(torch.as_tensor(rng.choice(len(public), config.pool, replace=False))),
                       config, 100 + k) for k in range(config.references)]
    # LiRA's design: every audited sample (member or not) is IN for exactly half of the references
    half = np.arange(config.references) < config.references // 2
    inside = np.stack([rng.permutation(half) for _ in range(len(everyone))], axis=1)
    online = [_fitted(spec, everyone.subset(torch.as_tensor(np.flatnonzero(row))), config, 200 + k)
              for k, row in enumerate(inside)]
    trained = time.perf_counter() - started
    offline_calibration = Calibration.offline(_statistics(offline, everyone))
    online_calibration = Calibration(_statistics(online, everyone), inside)
    signals = compute_signals(target, everyone, device=CPU)
    members, others = pool, outsiders
    member_cal, other_cal = offline_calibration.subset(is_member), offline_calibration.subset(~is_member)
    never_cal = Calibration.offline(_statistics(offline, pool))
    curves = {size: {"original": _fail_rates(target, members, others, member_cal, other_cal, config, size),
                     "never_trained": _fail_rates(never, members, others, never_cal, other_cal, config, size)}
              for size in config.sizes}
    return {
        "config": asdict(config), "seconds_training": trained,
        "target": {"train_accuracy": signals.subset(is_member).accuracy,
                   "outsider_accuracy": signals.subset(~is_member).accuracy},
        "power": {str(size): rates for size, rates in curves.items()},
        "design": {"offline_public": _attack_readings(signals, is_member, offline_calibration),
                   "in_out_halves": _attack_readings(signals, is_member, online_calibration)},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/audit"))
    parser.add_argument("--draws", type=int, default=PowerConfig.draws)
    parser.add_argument("--references", type=int, default=PowerConfig.references)
    parser.add_argument("--epochs", type=int, default=PowerConfig.epochs)
    args = parser.parse_args(argv)
    config = PowerConfig(draws=args.draws, references=args.references, epochs=args.epochs)
    command = " ".join(["python -m fedunlearn.simulations.audit_power", *(argv if argv is not None else sys.argv[1:])])
    commit, dirty = git_commit()
    result = {"commit": commit, "dirty": dirty, "command": command, **run_power(config)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "power.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
