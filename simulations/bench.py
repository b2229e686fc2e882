"""Centralised benchmark: one original model per seed, every method from it, all audited.

The protocol follows the SalUn / l1-sparse papers: ``original`` and
``retrain`` share one training recipe, trained to convergence; every method
starts from the same original; every number is shown next to retrain's.
Configuration is validated completely before any training starts.

Besides population attacks, every model is audited with LiRA and RMIA against
K reference models per seed, trained once with the same architecture and
recipe, each on a random half of the retain set: none saw a forget or a test
sample, so they show what the statistic of a sample looks like to a model that
never trained on it (offline references). U-LiRA, which retrains shadows, lives
in ``bench_ulira``.

The same references tell every method what a model that never trained on a
sample makes of it (``UnlearningTask.expected_confidence``, which ReMI measures
membership against unless ``--param remi.calibrated=false``): per sample of the
training pool and the hold-out, the mean over the references whose half left it
out (``bench_expectation``). Class forgetting gets none, as its reference set
is relabelled and the statistics do not describe it.

Two controls run beside the methods, on the same seeds. The floor: per seed a
second retrain under its own training seed, whose gap to the first says how far
two models that never saw the forget set differ by chance alone. Variants
(``--variant NAME=METHOD:KEY=VALUE``): a method run again under another name with
some hyper-parameters fixed, the ablations of a method on the very seeds,
originals and references it ran on.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum, unique
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedunlearn.common.audit.calibrated import Calibration
from fedunlearn.common.audit.report import AuditReport, ReferenceStatistics, audit_model, avg_gap
from fedunlearn.common.audit.signals import Logits, compute_signals, torch_logits
from fedunlearn.common.data.datasets import DATASETS, load_dataset, train_holdout_split
from fedunlearn.common.data.forget import ForgetSpec, parse_forget_spec, select_forget_ids
from fedunlearn.common.data.tensors import DatasetBundle, LabeledData, concat
from fedunlearn.common.device import resolve_device
from fedunlearn.common.edge.plan import Int8Mode
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import MODELS, Classifier, ModelSpec, build_model
from fedunlearn.common.training import TrainConfig, seed_everything, train
from fedunlearn.common.unlearning import METHODS, UnlearningResult, UnlearningTask, parse_params, run_method
from fedunlearn.common.unlearning.reference import build_reference, build_utility
from fedunlearn.simulations.bench_expectation import SampleStatistics, expected_confidence
from fedunlearn.simulations.bench_whitebox import WhiteBoxSets, white_box

__all__ = ["BenchConfig", "BenchReferences", "MethodRun", "Progress", "SeedData", "SeedRun", "Stream", "Variant",
           "derived_seed", "run_bench", "run_seed", "train_model", "train_references"]

GOLD = "retrain"
MIN_ULIRA_SHADOWS = 4  # paired splits: each target is forgotten in at least two shadows, one to score, one to fit


@unique  # a stream added with another's value would silently share its seeds
class Stream(IntEnum):
    """What a ``derived_seed`` is for, so that no two purposes ever share a seed."""

    REFERENCE = 1  # the audit's reference models
    ULIRA_SPLITS = 2  # U-LiRA's targets and shadow splits
    SHADOW = 3  # a shadow's original (and its methods, as the bench's methods share the original's seed)
    SHADOW_RETRAIN = 4  # a shadow's model retrained without its forget set, U-LiRA's yardstick
    FLOOR_RETRAIN = 5  # the second retrain per seed, whose gap to the first is the floor of avg_gap
    VALIDATION_TEST = 6  # the test set the tuning's validation seed carves from the training pool
    WHITE_BOX = 7  # the samples every model of a seed is probed on (bench_whitebox)


VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # it names a table row and a progress line


@dataclass(frozen=True)
class Variant:
    """An ablation: the registered ``method`` run again under ``name``, with ``params`` (raw strings, typed
    by ``parse_params``) fixed over the method's own ``--param`` overrides, so that only they differ."""

    name: str
    method: str
    params: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``NAME=METHOD:KEY=VALUE,KEY=VALUE``, as ``--variant`` takes it; ``NAME=METHOD`` keeps the defaults."""
        usage = f"--variant takes NAME=METHOD:KEY=VALUE,KEY=VALUE (e.g. remi-no-mi=remi:lambda_mia=0), got {text!r}"
        name, sep, rest = text.partition("=")
        method, _, pairs = rest.partition(":")
        params: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in pairs.split(","))):
            key, eq, value = (part.strip() for part in pair.partition("="))
            if not (eq and key and value):
                raise ConfigError(usage)
            if key in params:
                raise ConfigError(f"--variant {name.strip()}: {key} is given twice in {text!r}")
            params[key] = value
        if not (sep and name.strip() and method.strip()) or ":" in name:  # a colon before = : NAME= is missing
            raise ConfigError(usage)
        return cls(name.strip(), method.strip(), params)


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
    edge_int8: Int8Mode = Int8Mode.STATIC  # parsed from text by validate(); the edge bench needs an int8 model
    edge_repeats: int = 30  # timed calls per engine and batch size in the edge latency benchmark
    reference_models: int = 8  # K references per seed for LiRA / RMIA
    ulira_shadows: int = 0  # S shadow splits per seed for U-LiRA (bench_ulira); 0 = off
    variants: tuple[Variant, ...] = ()  # ablations, run after the methods on the same seeds
    tuned: Path | None = None  # the tuning.json (bench_tuning) whose choices method_params holds
    white_box: bool = True  # also probe every model's features and gradients (bench_whitebox)

    @property
    def all_methods(self) -> tuple[str, ...]:
        """The methods to run, retrain always included: every gap is measured against it."""
        return self.methods if GOLD in self.methods else (GOLD, *self.methods)

    @property
    def lineup(self) -> dict[str, str]:
        """Run name -> registered method: every method under its own name, then every variant under its own."""
        return {**{name: name for name in self.all_methods}, **{v.name: v.method for v in self.variants}}

    def _check_variants(self) -> None:
        """A variant's name must be new (a table row of its own) and its method registered."""
        taken = {"original", *METHODS.names()}
        seen: set[str] = set()
        for variant in self.variants:
            if not VARIANT_NAME.fullmatch(variant.name):
                raise ConfigError(f"--variant name {variant.name!r} must be letters, digits and _.+- starting "
                                  "with a letter or digit, e.g. remi-no-mi")
            if variant.name in taken:
                raise ConfigError(f"--variant name {variant.name!r} is taken by a method or the original; "
                                  f"pick another, e.g. {variant.method}-ablated")
            if variant.name in seen:
                raise ConfigError(f"--variant name {variant.name!r} is given twice")
            seen.add(variant.name)
            METHODS.get(variant.method)

    def _params(self) -> dict[str, Any]:
        """Typed hyper-parameters per run name: a method's ``--param`` overrides, a variant's on top of its
        method's."""
        params = {name: parse_params(name, self.method_params.get(name, {})) for name in self.all_methods}
        for variant in self.variants:
            try:
                params[variant.name] = parse_params(variant.method,
                                                    {**self.method_params.get(variant.method, {}), **variant.params})
            except ConfigError as exc:
                raise ConfigError(f"--variant {variant.name}: {exc}") from None
        return params

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
        self._check_variants()
        params = self._params()
        if Int8Mode.parse(self.edge_int8, "--edge-int8") is Int8Mode.NONE:
            raise ConfigError("--edge-int8 must be static or dynamic: the edge bench compares int8 with fp32")
        if self.edge_repeats < 1:
            raise ConfigError(f"--edge-repeats must be >= 1, got {self.edge_repeats}")
        if self.reference_models < 2:
            raise ConfigError(f"--reference-models must be >= 2 (LiRA estimates their spread), "
                              f"got {self.reference_models}")
        forget = parse_forget_spec(self.forget)
        if self.ulira_shadows != 0 and self.ulira_shadows < MIN_ULIRA_SHADOWS:
            raise ConfigError(f"--ulira-shadows must be 0 (off) or >= {MIN_ULIRA_SHADOWS} (16 or more "
                              f"recommended), got {self.ulira_shadows}")
        if self.ulira_shadows and forget.kind != "random":
            raise ConfigError(f"--ulira-shadows measures forgetting of single samples and needs a "
                              f"random:<fraction> forget set, got {forget}; drop --ulira-shadows or use random:0.1")
        resolve_device(self.device)
        return forget, params


def derived_seed(seed: int, stream: Stream, index: int) -> int:
    """A 32-bit seed for the ``index``-th model of purpose ``stream`` in bench seed ``seed``: distinct
    triples give unrelated seeds, so references and shadows never repeat the original's init or order."""
    return int(np.random.SeedSequence((seed, stream, index)).generate_state(1)[0])


@dataclass(frozen=True)
class SeedData:
    """One seed's sets: what every audit of that seed sees, whatever produces the logits.

    references: the reference models' statistics on forget and test once they are trained (then every
    audit also runs LiRA and RMIA).
    expected: sample id -> the references' mean statistic over those that did not train on it, for the
    training pool and the hold-out (``bench_expectation``); None before the references are trained.
    """

    bundle: DatasetBundle
    spec: ModelSpec
    retain: LabeledData
    forget: LabeledData
    holdout: LabeledData
    forget_spec: ForgetSpec
    seed: int
    references: ReferenceStatistics | None = None
    expected: Mapping[int, float] | None = None

    @property
    def forgotten_classes(self) -> tuple[int, ...]:
        return self.forget_spec.forgotten_classes

    @property
    def task_expectation(self) -> Mapping[int, float] | None:
        """The expectation every method's task carries: ``expected`` for sample forgetting; None for class
        forgetting, whose reference set is relabelled while the references' statistics are of true labels."""
        return self.expected if self.forget_spec.granularity == "sample" else None

    def audit(self, logits_of: Logits) -> AuditReport:
        """The bench's audit of a model given as inputs -> logits: ``torch_logits`` or an ONNX Runtime session."""
        return audit_model(logits_of, retain=self.retain, forget=self.forget, test=self.bundle.test,
                           forgotten_classes=self.forgotten_classes, seed=self.seed, references=self.references)

    def task(self, original: Classifier, *, retain: LabeledData, forget: LabeledData, recipe: TrainConfig,
             device: torch.device, seed: int) -> UnlearningTask:
        """What every method gets to forget ``forget`` from ``original``: the bench's own request, or a
        U-LiRA shadow's; the reference and utility sets come from this seed's hold-out either way, and so
        does the expectation (``task_expectation``): a shadow's targets are pool samples, whose expectation
        only references that never trained on them informed."""
        granularity, classes = self.forget_spec.granularity, self.forgotten_classes
        return UnlearningTask(
            original=original, spec=self.spec, retain=retain, forget=forget,
            reference=build_reference(self.holdout, granularity, classes, seed=seed),
            recipe=recipe, granularity=granularity, device=device, seed=seed,
            utility=build_utility(self.holdout, granularity, classes),
            expected_confidence=self.task_expectation,
        )


@dataclass(frozen=True)
class BenchReferences:
    """One seed's K reference models as the audits use them, and what training them cost (paid once per
    seed, shared by every method's audit).

    statistics: (K, ·) on the forget and test sets, what LiRA and RMIA audit with (no reference trained on
    either). samples: (K, R + M + H) on the retain set, the forget set and the hold-out, in that order, with
    IN where reference k trained on the sample (its half of the retain set): what methods are told to expect.
    """

    statistics: ReferenceStatistics
    samples: SampleStatistics
    train_size: int
    seconds: float

    @property
    def count(self) -> int:
        return self.statistics.forget.num_references


@dataclass(frozen=True)
class MethodRun:
    """One method (or the original) on one seed: the model, its audit, its cost and, unless the bench
    turned them off, its white-box checks (``bench_whitebox.white_box``)."""

    model: Classifier
    report: AuditReport
    seconds: float
    result: UnlearningResult | None
    white_box: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class SeedRun:
    """One seed: the original and every method or variant by run name; ``floor`` the second retrain, kept
    out of ``runs`` so that it is in no table of methods and its time in no method's."""

    seed: int
    sizes: Mapping[str, int]
    runs: Mapping[str, MethodRun]
    data: SeedData
    references: BenchReferences
    floor: MethodRun

    def gap(self, method: str) -> float:
        return avg_gap(self.runs[method].report, self.runs[GOLD].report)

    @property
    def floor_gap(self) -> float:
        """avg_gap between two retrains of this seed: the noise below which no gap means anything."""
        return avg_gap(self.floor.report, self.runs[GOLD].report)


Progress = Callable[[str], None]


def train_model(spec: ModelSpec, data: LabeledData, recipe: TrainConfig, device: torch.device,
                seed: int) -> tuple[Classifier, float]:
    """A fresh model trained with the bench's recipe: the original, a reference or a shadow, all alike."""
    generator = seed_everything(seed)
    model = build_model(spec, seed=seed)
    start = time.perf_counter()
    train(model, data, recipe, device=device, generator=generator)
    return model, time.perf_counter() - start


def train_references(data: SeedData, config: BenchConfig, device: torch.device) -> BenchReferences:
    """K models of the original's architecture and recipe, each on its own random half of the retain set,
    and their logit confidence on the forget and test sets (offline: none trained on either), and on the
    retain set and the hold-out, with the half each trained on."""
    size = len(data.retain) // 2
    if size < 1:
        raise ConfigError(f"the retain set has {len(data.retain)} samples, too few to train reference models on "
                          "halves of it; use more training data or forget less")
    forget_rows, test_rows, sample_rows, inside, seconds = [], [], [], [], 0.0
    others, cut = concat(data.retain, data.holdout), len(data.retain)  # one pass for what the audits skip
    for k in range(config.reference_models):
        seed = derived_seed(data.seed, Stream.REFERENCE, k)
        half = torch.randperm(len(data.retain), generator=torch.Generator().manual_seed(seed))[:size]
        model, spent = train_model(data.spec, data.retain.subset(half), config.recipe, device, seed)
        forget_rows.append(compute_signals(model, data.forget, device=device).logit_confidence)
        test_rows.append(compute_signals(model, data.bundle.test, device=device).logit_confidence)
        other = compute_signals(model, others, device=device).logit_confidence
        sample_rows.append(np.concatenate([other[:cut], forget_rows[-1], other[cut:]]))
        trained = np.zeros(len(others) + len(data.forget), dtype=bool)
        trained[half.numpy()] = True  # the retain set's columns come first
        inside.append(trained)
        seconds += spent
    statistics = ReferenceStatistics(forget=Calibration.offline(np.stack(forget_rows)),
                                     test=Calibration.offline(np.stack(test_rows)))
    ids = torch.cat([data.retain.ids, data.forget.ids, data.holdout.ids]).numpy()
    samples = SampleStatistics(ids, Calibration(np.stack(sample_rows), np.stack(inside)))
    return BenchReferences(statistics, samples, size, seconds)


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
    """Train the original and the references, run each method and variant from the original, then the
    floor's second retrain; audit all against the same data and the same references."""
    device = resolve_device(config.device)
    train_data, holdout = _split(bundle, config, seed)
    forget_ids = select_forget_ids(forget, train_data, num_classes=bundle.num_classes, seed=seed)
    forget_data = train_data.where_ids(forget_ids, keep=True)
    retain = train_data.where_ids(forget_ids, keep=False)
    c, h, _ = bundle.input_shape
    spec = ModelSpec(config.model, c, h, bundle.num_classes)
    data = SeedData(bundle, spec, retain, forget_data, holdout, forget, seed)
    progress(f"seed {seed}: training original")
    original, original_seconds = train_model(spec, train_data, config.recipe, device, seed)
    progress(f"seed {seed}: training {config.reference_models} reference models")
    references = train_references(data, config, device)
    data = replace(data, references=references.statistics, expected=expected_confidence(references.samples))
    probe_seed = derived_seed(seed, Stream.WHITE_BOX, 0)
    sets = WhiteBoxSets.draw(forget=forget_data, retain=retain, test=bundle.test,
                             forgotten_classes=forget.forgotten_classes, seed=probe_seed)
    target = sets.relearn_target(original, device)

    def audited(model: Classifier, seconds: float, result: UnlearningResult | None) -> MethodRun:
        checks = white_box(model, sets, target=target, device=device, seed=probe_seed) if config.white_box else None
        return MethodRun(model, data.audit(torch_logits(model, device=device)), seconds, result, checks)

    def run(label: str, method: str, method_params: Any, task: UnlearningTask) -> MethodRun:
        progress(f"seed {seed}: {label}")
        result = run_method(method, task, method_params)
        return audited(result.model, result.seconds, result)

    task = data.task(original, retain=retain, forget=forget_data, recipe=config.recipe, device=device, seed=seed)
    runs = {"original": audited(original, original_seconds, None)}
    runs |= {name: run(name, method, params[name], task) for name, method in config.lineup.items()}
    # the floor is retrain itself under a seed of its own stream: same data, recipe and code, another draw
    floor = run(f"floor, {GOLD} under another seed", GOLD, params[GOLD],
                replace(task, seed=derived_seed(seed, Stream.FLOOR_RETRAIN, 0)))
    sizes = {"train": len(train_data), "retain": len(retain), "forget": len(forget_data),
             "holdout": len(holdout), "test": len(bundle.test)}
    return SeedRun(seed, sizes, runs, data, references, floor)


def run_bench(config: BenchConfig, progress: Progress = lambda _: None, *,
              restore: Callable[[int], SeedRun | None] = lambda _: None,
              keep: Callable[[SeedRun], None] = lambda _: None) -> list[SeedRun]:
    """Validate, load the dataset once, then run every seed: ``restore(seed)`` may give a seed back from
    an earlier run (``bench_checkpoint``), and ``keep`` is handed each seed that was run."""
    forget, params = config.validate()
    bundle = load_dataset(config.dataset, root=config.data_root, download=config.download)
    runs = []
    for seed in range(config.seeds):
        run = restore(seed)
        if run is None:
            run = run_seed(bundle, config, forget, params, seed, progress)
            keep(run)
        else:
            progress(f"seed {seed}: restored")
        runs.append(run)
    return runs
