"""Centralised benchmark: one original model per seed, every method from it, all audited.

The protocol follows the SalUn / l1-sparse papers: ``original`` and
``retrain`` share one training recipe, trained to convergence; every method
starts from the same original; every number is shown next to retrain's.
Configuration is validated completely before any training starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from common.audit.report import AuditReport, audit_model, avg_gap
from common.audit.signals import Logits, torch_logits
from common.data.datasets import DATASETS, load_dataset, train_holdout_split
from common.data.forget import ForgetSpec, parse_forget_spec, select_forget_ids
from common.data.tensors import DatasetBundle, LabeledData
from common.device import resolve_device
from common.errors import ConfigError
from common.models import MODELS, Classifier, ModelSpec, build_model
from common.training import TrainConfig, seed_everything, train
from common.unlearning import METHODS, UnlearningResult, UnlearningTask, parse_params, run_method
from common.unlearning.reference import build_reference, build_utility

__all__ = ["BenchConfig", "MethodRun", "SeedData", "SeedRun", "run_bench"]

GOLD = "retrain"


@dataclass(frozen=True)
class BenchConfig:
    """Everything a benchmark run depends on; saved next to its results."""

    dataset: str = "digits"
    model: str = "cnn"
    forget: str = "random:0.1"
    methods: tuple[str, ...] = (GOLD, "remi", "finetune", "neggrad_plus", "random_label", "fisher", "salun")
    seeds: int = 1
    device: str = "auto"
    train_size: int | None = None
    holdout_size: int | None = None
    recipe: TrainConfig = field(default_factory=TrainConfig)
    method_params: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    data_root: Path | None = None
    download: bool = False
    edge: bool = False  # also export original/retrain/remi to ONNX fp32 + int8 and audit those (bench_edge)
    edge_int8: Literal["static", "dynamic"] = "static"
    edge_repeats: int = 30  # timed calls per engine and batch size in the edge latency benchmark

    @property
    def all_methods(self) -> tuple[str, ...]:
        """The methods to run, retrain always included: every gap is measured against it."""
        return self.methods if GOLD in self.methods else (GOLD, *self.methods)

    def validate(self) -> tuple[ForgetSpec, dict[str, Any]]:
        """Fail on any bad name or value now, before minutes of training."""
        DATASETS.get(self.dataset)
        MODELS.get(self.model)
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {self.seeds}")
        for name in self.methods:
            METHODS.get(name)
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"a method is listed twice in {','.join(self.methods)}")
        unknown = set(self.method_params) - set(self.methods)
        if unknown:
            raise ConfigError(f"hyper-parameters given for methods not run: {', '.join(sorted(unknown))}")
        params = {name: parse_params(name, self.method_params.get(name, {})) for name in self.all_methods}
        if self.edge_int8 not in ("static", "dynamic"):
            raise ConfigError(f"--edge-int8 must be static or dynamic, got {self.edge_int8!r}")
        if self.edge_repeats < 1:
            raise ConfigError(f"--edge-repeats must be >= 1, got {self.edge_repeats}")
        resolve_device(self.device)
        return parse_forget_spec(self.forget), params


@dataclass(frozen=True)
class SeedData:
    """One seed's sets: what every audit of that seed sees, whatever produces the logits."""

    bundle: DatasetBundle
    spec: ModelSpec
    retain: LabeledData
    forget: LabeledData
    forgotten_classes: tuple[int, ...]
    seed: int

    def audit(self, logits_of: Logits) -> AuditReport:
        """The bench's audit of a model given as inputs -> logits: ``torch_logits`` or an ONNX Runtime session."""
        return audit_model(logits_of, retain=self.retain, forget=self.forget, test=self.bundle.test,
                           forgotten_classes=self.forgotten_classes, seed=self.seed)


@dataclass(frozen=True)
class MethodRun:
    """One method (or the original) on one seed: the model, its audit and its cost."""

    model: Classifier
    report: AuditReport
    seconds: float
    result: UnlearningResult | None


@dataclass(frozen=True)
class SeedRun:
    seed: int
    sizes: Mapping[str, int]
    runs: Mapping[str, MethodRun]
    data: SeedData

    def gap(self, method: str) -> float:
        return avg_gap(self.runs[method].report, self.runs[GOLD].report)


Progress = Callable[[str], None]


def _train_original(spec: ModelSpec, data: LabeledData, recipe: TrainConfig, device: torch.device,
                    seed: int) -> tuple[Classifier, float]:
    generator = seed_everything(seed)
    model = build_model(spec, seed=seed)
    start = time.perf_counter()
    train(model, data, recipe, device=device, generator=generator)
    return model, time.perf_counter() - start


def _split(bundle: DatasetBundle, config: BenchConfig, seed: int) -> tuple[LabeledData, LabeledData]:
    total = len(bundle.train)
    train_size = config.train_size
    if config.holdout_size is not None:
        holdout = config.holdout_size
    elif train_size is not None and total - train_size > 0:
        holdout = min(max(train_size // 4, 1), total - train_size)
    else:
        holdout = total // 5
    return train_holdout_split(bundle.train, train_size=train_size, holdout_size=holdout, seed=seed)


def run_seed(bundle: DatasetBundle, config: BenchConfig, forget: ForgetSpec, params: Mapping[str, Any],
             seed: int, progress: Progress) -> SeedRun:
    """Train the original, run each method from it, audit all against the same data."""
    device = resolve_device(config.device)
    train_data, holdout = _split(bundle, config, seed)
    forget_ids = select_forget_ids(forget, train_data, num_classes=bundle.num_classes, seed=seed)
    forget_data = train_data.where_ids(forget_ids, keep=True)
    retain = train_data.where_ids(forget_ids, keep=False)
    c, h, _ = bundle.input_shape
    spec = ModelSpec(config.model, c, h, bundle.num_classes)
    data = SeedData(bundle, spec, retain, forget_data, forget.forgotten_classes, seed)
    progress(f"seed {seed}: training original")
    original, original_seconds = _train_original(spec, train_data, config.recipe, device, seed)

    def audited(model: Classifier, seconds: float, result: UnlearningResult | None) -> MethodRun:
        return MethodRun(model, data.audit(torch_logits(model, device=device)), seconds, result)

    task = UnlearningTask(
        original=original, spec=spec, retain=retain, forget=forget_data,
        reference=build_reference(holdout, forget.granularity, forget.forgotten_classes, seed=seed),
        recipe=config.recipe, granularity=forget.granularity, device=device, seed=seed,
        utility=build_utility(holdout, forget.granularity, forget.forgotten_classes),
    )
    runs = {"original": audited(original, original_seconds, None)}
    for name in config.all_methods:
        progress(f"seed {seed}: {name}")
        result = run_method(name, task, params[name])
        runs[name] = audited(result.model, result.seconds, result)
    sizes = {"train": len(train_data), "retain": len(retain), "forget": len(forget_data),
             "holdout": len(holdout), "test": len(bundle.test)}
    return SeedRun(seed, sizes, runs, data)


def run_bench(config: BenchConfig, progress: Progress = lambda _: None) -> list[SeedRun]:
    """Validate, load the dataset once, then run every seed."""
    forget, params = config.validate()
    bundle = load_dataset(config.dataset, root=config.data_root, download=config.download)
    return [run_seed(bundle, config, forget, params, seed, progress) for seed in range(config.seeds)]
