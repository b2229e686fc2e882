"""``fedunlearn bench --edge``: does forgetting survive ONNX export and int8, and what does the edge gain?

For each seed, the original, retrain and remi models (whichever ran) go through the edge pipeline
every export takes (``stage_package``: fp32 parity against torch, static int8 checked against fp32 on
the test split) into ``OUT/edge/seed-<s>/<model>/``, next to a checkpoint of the weights. Every
artifact then gets the bench's own audit (``SeedData.audit``, the one behind ``mia_auc``) through
ONNX Runtime, so a torch / fp32 / int8 difference is the engine's and not the audit's;
``fedunlearn edge latency`` times the three engines on one thread.

Static int8 is calibrated on retain images (``CalibrationSource.TRAIN``): the forget set must not
decide the quantiser's activation ranges, and the whole test split measures agreement and accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedunlearn.common.audit.report import AuditReport
from fedunlearn.common.checkpoint import dataset_meta, save_checkpoint
from fedunlearn.common.edge.bench import BATCH_SIZES, EdgeBench, run_edge_bench, write_edge_bench
from fedunlearn.common.edge.export import PARITY_ATOL
from fedunlearn.common.edge.inputs import PackageInputs, package_inputs
from fedunlearn.common.edge.package import FP32_NAME, INT8_NAME, MAX_INT8_DROP, MIN_INT8_AGREEMENT, dataset_manifest
from fedunlearn.common.edge.pipeline import ExportJob, stage_package
from fedunlearn.common.edge.plan import CalibrationSource, ExportPlan, Int8Mode
from fedunlearn.common.edge.runtime import Manifest
from fedunlearn.common.edge.scoring import onnx_logits
from fedunlearn.common.errors import ModelError
from fedunlearn.common.models import Classifier
from fedunlearn.simulations.bench import GOLD, BenchConfig, MethodRun, Progress, SeedData, SeedRun
from fedunlearn.simulations.bench_report import mean_std
from fedunlearn.simulations.markdown import table

__all__ = ["EDGE_MODELS", "METRICS", "TARGETS", "EdgeModelRun", "SeedEdge", "edge_markdown", "edge_models",
           "edge_payload", "export_model", "run_edge", "write_edge_report"]

EDGE_MODELS = ("original", GOLD, "remi")
PRECISIONS = ("torch", "fp32", "int8")
ENGINES = ("torch", "ort_fp32", "ort_int8")  # edge latency's names (bench-edge.json)
ARTIFACTS = {"fp32": FP32_NAME, "int8": INT8_NAME}
CHECKPOINT = "model.pt"
METRICS = (
    *(f"mia_auc_{p}" for p in PRECISIONS), "mia_auc_int8_gap",  # |int8 - fp32| forget AUC
    *(f"ta_{p}" for p in PRECISIONS), "int8_ta_drop",  # fp32 - int8 test accuracy, points
    "fp32_max_abs_diff", "int8_top1_agreement",  # from the manifest's parity entries; agreement 0-1
    *(f"{e}_b{b}_ms" for e in ENGINES for b in BATCH_SIZES),  # median latency of one call
    "ort_fp32_vs_torch_b1", "int8_vs_fp32_b1", "fp32_bytes", "int8_bytes",
)
# What an edge export should reach, checked on the means over seeds: (comparison, bound).
TARGETS: dict[str, tuple[str, float]] = {
    "fp32_max_abs_diff": ("<=", PARITY_ATOL), "int8_top1_agreement": (">=", MIN_INT8_AGREEMENT),
    "int8_ta_drop": ("<=", MAX_INT8_DROP), "mia_auc_int8_gap": ("<=", 0.02),
    "ort_fp32_vs_torch_b1": ("<=", 1.0), "int8_vs_fp32_b1": ("<=", 0.6),
}


@dataclass(frozen=True)
class EdgeModelRun:
    """One model of one seed at the edge: its audit per precision, its manifest (parity), its latencies."""

    name: str
    folder: Path
    reports: Mapping[str, AuditReport]  # "torch", "fp32", "int8"
    manifest: Manifest
    int8_verdict: str | None  # why the int8 model misses its bar, or None
    latency: EdgeBench

    def metrics(self) -> dict[str, float]:
        """Every one of ``METRICS`` for this model."""
        auc = {p: self.reports[p].mia_auc for p in PRECISIONS}
        ta = {p: self.reports[p].ta for p in PRECISIONS}
        artifacts = self.manifest.artifacts
        values = {f"mia_auc_{p}": auc[p] for p in PRECISIONS} | {f"ta_{p}": ta[p] for p in PRECISIONS}
        values |= {"mia_auc_int8_gap": abs(auc["int8"] - auc["fp32"]), "int8_ta_drop": ta["fp32"] - ta["int8"],
                   "fp32_max_abs_diff": float(artifacts[FP32_NAME]["parity"]["max_abs_diff"]),
                   "int8_top1_agreement": float(artifacts[INT8_NAME]["parity"]["top1_agreement"])}
        return values | _latencies(self.latency)


@dataclass(frozen=True)
class SeedEdge:
    seed: int
    models: Mapping[str, EdgeModelRun]


def _known(value: float | None, what: str) -> float:
    if value is None:
        raise ModelError(f"edge latency measured no {what}; the export folder lacks a torch checkpoint or int8 model")
    return float(value)


def _latencies(bench: EdgeBench) -> dict[str, float]:
    values = {}
    for name in ENGINES:
        engine = bench.engines[name]
        for batch in BATCH_SIZES:
            latency = None if engine is None else getattr(engine, f"b{batch}").median_ms
            values[f"{name}_b{batch}_ms"] = _known(latency, f"{name} latency")
    for key in ("ort_fp32_vs_torch_b1", "int8_vs_fp32_b1"):
        values[key] = _known(bench.ratios[key], key)
    for key in ("fp32_bytes", "int8_bytes"):
        values[key] = _known(bench.sizes[key], key)
    return values


def edge_models(config: BenchConfig) -> tuple[str, ...]:
    """The models ``--edge`` exports: original, retrain and remi, those that ran."""
    ran = ("original", *config.all_methods)
    return tuple(name for name in EDGE_MODELS if name in ran)


def export_model(data: SeedData, model: Classifier, folder: Path, inputs: PackageInputs, *,
                 int8: Int8Mode) -> tuple[Manifest, str | None]:
    """model.pt, model.onnx, model.int8.onnx and manifest.json in ``folder``; the manifest and the int8 verdict.

    The checkpoint carries what ``fedunlearn edge export`` and ``edge latency`` read from one (dataset,
    classes, preprocessing), and the manifest names it as its source.
    """
    bundle, spec, state = data.bundle, data.spec, model.state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / CHECKPOINT, state, spec, {**dataset_meta(bundle), "seed": data.seed})
    description = dataset_manifest(spec, bundle, state, source_checkpoint=CHECKPOINT)
    with stage_package(ExportJob(model, spec, description, inputs, int8, folder)) as built:
        built.publish()
    return built.manifest, built.verdict


def _edge_model(data: SeedData, name: str, run: MethodRun, folder: Path, inputs: PackageInputs, *,
                int8: Int8Mode, repeats: int) -> EdgeModelRun:
    """Export one model, audit each artifact with ONNX Runtime (torch: the bench's own report), time them."""
    manifest, verdict = export_model(data, run.model, folder, inputs, int8=int8)
    reports = {"torch": run.report}
    for precision, file in ARTIFACTS.items():
        sha256 = manifest.artifacts[file]["sha256"]
        reports[precision] = data.audit(onnx_logits((folder / file).read_bytes(), expected_sha256=sha256))
    latency = run_edge_bench(folder / FP32_NAME, repeats=repeats, torch_model=folder / CHECKPOINT, seed=data.seed)
    write_edge_bench(latency, folder / "bench-edge.json")
    return EdgeModelRun(name, folder, reports, manifest, verdict, latency)


def _plan(config: BenchConfig) -> ExportPlan:
    """The bench's export: ``--edge-int8``, static int8 calibrated on the plan's default number of images."""
    return ExportPlan(int8=Int8Mode.parse(config.edge_int8, "--edge-int8"))


def run_edge(config: BenchConfig, runs: Sequence[SeedRun], out: Path,
             progress: Progress = lambda _: None) -> list[SeedEdge]:
    """Every edge model of every seed into ``out/edge/seed-<s>/<model>/``, audited and timed."""
    plan = _plan(config)
    edged = []
    for run in runs:
        inputs = package_inputs(run.data.bundle.test, plan=plan, seed=run.data.seed,
                                calibrate_on=CalibrationSource.TRAIN, train=run.data.retain, measure=None)
        models = {}
        for name in edge_models(config):
            progress(f"seed {run.seed}: edge {name}")
            models[name] = _edge_model(run.data, name, run.runs[name], out / "edge" / f"seed-{run.seed}" / name,
                                       inputs, int8=plan.int8, repeats=config.edge_repeats)
        edged.append(SeedEdge(run.seed, models))
    return edged


def _misses(entry: Mapping[str, float]) -> list[str]:
    missed = []
    for metric, (op, bound) in TARGETS.items():
        value = entry[metric]
        if not (value <= bound if op == "<=" else value >= bound):
            missed.append(f"{metric} {value:.4g} (want {op} {bound:g})")
    return missed


def edge_payload(config: BenchConfig, edged: Sequence[SeedEdge]) -> dict[str, Any]:
    """edge.json: per seed every metric; per model mean and ``_std`` over seeds and the targets it misses."""
    names = list(edged[0].models)
    models: dict[str, dict[str, Any]] = {}
    for name in names:
        models[name] = mean_std([seed.models[name].metrics() for seed in edged], METRICS, digits=None)
        models[name]["misses"] = _misses(models[name])
    latency = edged[0].models[names[0]].latency
    return {
        "dataset": config.dataset, "model": config.model, "forget": config.forget,
        "seeds": [seed.seed for seed in edged], "int8": config.edge_int8, "calibration": _plan(config).calibration,
        "repeats": config.edge_repeats, "metrics": list(METRICS),
        "targets": {metric: {"op": op, "value": bound} for metric, (op, bound) in TARGETS.items()},
        "models": models,
        "per_seed": [{"seed": seed.seed, "models": {name: {**run.metrics(), "folder": str(run.folder),
                                                            "int8_verdict": run.int8_verdict}
                                                     for name, run in seed.models.items()}} for seed in edged],
        "cpu": latency.cpu, "threads": latency.threads, "versions": latency.versions,
    }


def _cell(entry: Mapping[str, Any], metric: str, fmt: str, scale: float = 1.0) -> str:
    return f"{entry[metric] * scale:{fmt}} ± {entry[metric + '_std'] * scale:{fmt}}"


def edge_markdown(payload: Mapping[str, Any]) -> str:
    """The ``## Edge`` section: leakage per precision, export parity, latency and size."""
    models: Mapping[str, Mapping[str, Any]] = payload["models"]
    leakage = [[name, *(_cell(e, f"mia_auc_{p}", ".3f") for p in PRECISIONS), _cell(e, "mia_auc_int8_gap", ".3f"),
                *(_cell(e, f"ta_{p}", ".2f") for p in PRECISIONS)] for name, e in models.items()]
    parity = [[name, _cell(e, "fp32_max_abs_diff", ".1e"), _cell(e, "int8_top1_agreement", ".2f", 100.0),
               _cell(e, "int8_ta_drop", ".2f")] for name, e in models.items()]
    latency = [[name, *(_cell(e, f"{eng}_b{b}_ms", ".3f") for b in BATCH_SIZES for eng in ENGINES),
                _cell(e, "ort_fp32_vs_torch_b1", ".2f"), _cell(e, "int8_vs_fp32_b1", ".2f"),
                _cell(e, "fp32_bytes", ".0f", 1 / 1024), _cell(e, "int8_bytes", ".0f", 1 / 1024)]
               for name, e in models.items()]
    misses = [f"- {name}: {'; '.join(e['misses'])}" for name, e in models.items() if e["misses"]]
    return "\n".join([
        "## Edge: ONNX fp32 and int8", "",
        f"int8 {payload['int8']} (calibrated on {payload['calibration']} retain images); parity and agreement on "
        f"the test split; latency: median of {payload['repeats']} calls, one thread per engine, "
        f"CPU {payload['cpu'].get('model')}. Mean ± std over seeds {payload['seeds']}.", "",
        "Forget-set MIA AUC (the bench's loss attack) and test accuracy per precision:", "",
        *table(["model", "auc torch", "auc fp32", "auc int8", "auc abs(int8 - fp32)",
                 "ta torch", "ta fp32", "ta int8"], leakage), "",
        *table(["model", "fp32 max abs logit diff", "int8 top-1 agreement %", "int8 ta drop (points)"], parity), "",
        *table(["model", *(f"{eng} b{b} ms" for b in BATCH_SIZES for eng in ENGINES), "fp32/torch b1",
                 "int8/fp32 b1", "fp32 KiB", "int8 KiB"], latency), "",
        "Targets missed (means): " + ("none" if not misses else ""), *misses, "",
    ])


def write_edge_report(config: BenchConfig, edged: Sequence[SeedEdge], out: Path) -> dict[str, Any]:
    """edge.json and edge.md in ``out``; returns the payload."""
    payload = edge_payload(config, edged)
    out.mkdir(parents=True, exist_ok=True)
    (out / "edge.json").write_text(json.dumps(payload, indent=2))
    (out / "edge.md").write_text(edge_markdown(payload))
    return payload
