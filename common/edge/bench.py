"""Edge latency benchmark: torch eager vs ONNX Runtime fp32 vs ONNX Runtime int8, one thread each.

All engines see the same preprocessed inputs in the same run, so the ratios compare
engines, not machines or moods. One intra-op thread everywhere keeps the comparison
fair on a small box and close to a single-core device; the thread counts, the CPU
and the library versions are recorded next to the figures.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch

from fedunlearn.common.checkpoint import load_checkpoint
from fedunlearn.common.edge.manifest import package_versions
from fedunlearn.common.edge.runtime import EdgeModel, EdgeModelError, Manifest, export_file, preprocess
from fedunlearn.common.errors import ConfigError, ModelError
from fedunlearn.common.nodes.storage import atomic_write_json

__all__ = ["BATCH_SIZES", "BENCH_FORMAT", "EdgeBench", "EngineResult", "Latency", "run_edge_bench",
           "write_edge_bench"]

BENCH_FORMAT = "fedunlearn-bench-edge/1"
BATCH_SIZES = (1, 32)
Run = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


@dataclass(frozen=True)
class Latency:
    """Wall-clock milliseconds per call of one batch, over ``repeats`` timed calls after warm-up."""

    median_ms: float
    p90_ms: float


@dataclass(frozen=True)
class EngineResult:
    """One engine's figures. Parity is against torch (or fp32 ORT when no checkpoint) on the batch of 32."""

    file: str
    b1: Latency
    b32: Latency
    throughput_b32: float  # samples/s at batch 32, from the median latency
    bytes: int | None
    max_abs_diff: float
    top1_agreement: float


@dataclass(frozen=True)
class EdgeBench:
    """Everything bench-edge.json holds; ``ratios`` are batch-1 median latency ratios (< 1: first is faster)."""

    model: str
    architecture: str
    parent_model_sha256: str
    input_shape: list[int | None]
    repeats: int
    warmup: int
    engines: dict[str, EngineResult | None]
    ratios: dict[str, float | None]
    sizes: dict[str, int | float | None]
    threads: dict[str, int | None]
    cpu: dict[str, Any]
    versions: dict[str, str]
    created: str
    format: str = BENCH_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _time(run: Run, x: npt.NDArray[np.float32], *, repeats: int, warmup: int) -> Latency:
    for _ in range(warmup):
        run(x)
    samples = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter_ns()
        run(x)
        samples[i] = (time.perf_counter_ns() - start) / 1e6
    return Latency(median_ms=float(np.median(samples)), p90_ms=float(np.percentile(samples, 90)))


def _measure(run: Run, x: npt.NDArray[np.float32], reference: npt.NDArray[np.float32] | None, *,
             file: str, size: int | None, repeats: int, warmup: int) -> EngineResult:
    """Time ``run`` at batch 1 and 32 on the same ``x`` (32, C, H, W); compare its logits with ``reference``."""
    logits = run(x)
    reference = logits if reference is None else reference
    b1 = _time(run, x[:1], repeats=repeats, warmup=warmup)
    b32 = _time(run, x, repeats=repeats, warmup=warmup)
    return EngineResult(
        file=file, b1=b1, b32=b32, throughput_b32=len(x) / (b32.median_ms / 1e3), bytes=size,
        max_abs_diff=float(np.abs(logits - reference).max()),
        top1_agreement=float((logits.argmax(1) == reference.argmax(1)).mean()),
    )


def _ort_run(model: EdgeModel) -> Run:
    session, feed, fetch = model.session, model.manifest.input_name, [model.manifest.output_name]
    return lambda x: np.asarray(session.run(fetch, {feed: x})[0])


def _torch_run(path: Path, manifest: Manifest) -> Run:
    """The checkpoint's eager forward pass, after checking it holds the weights the ONNX file came from."""
    module, meta = load_checkpoint(path)
    expected = manifest.parent_model_sha256
    if meta["model_sha256"] != expected:
        raise ModelError(f"{path} holds weights {meta['model_sha256']}, but {manifest.path} was exported from "
                         f"{expected}; pass the matching checkpoint with --torch-model")
    module.eval()

    def run(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return run


def _checkpoint_path(manifest: Manifest, torch_model: Path | None) -> Path | None:
    if torch_model is not None:
        return Path(torch_model)
    source = manifest.source_checkpoint
    if source is None:
        return None
    try:
        path = export_file(manifest, source, "source_checkpoint")
    except EdgeModelError as err:  # e.g. a federation run's ../model.pt: the user may vouch for it
        raise ModelError(f"{err}; to compare against that checkpoint anyway, pass it with --torch-model") from err
    if not path.is_file():
        raise ModelError(f"{manifest.path} names source_checkpoint {source!r}, but {path} does not exist; "
                         "pass the checkpoint with --torch-model")
    return path


def _int8_file(model_path: Path, manifest: Manifest) -> Path | None:
    entry = manifest.artifacts.get(model_path.name, {})
    if entry.get("precision") != "fp32":
        raise ConfigError(f"edge latency takes the fp32 model, but {model_path.name} has precision "
                          f"{entry.get('precision')!r} in {manifest.path}; give model.onnx")
    names = sorted(n for n, e in manifest.artifacts.items() if str(e.get("precision", "")).startswith("int8"))
    return export_file(manifest, names[0], "int8 artifact") if names else None


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _cpu() -> dict[str, Any]:
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("model name", "hardware", "cpu model") and value.strip():
                name = value.strip()
                break
    except OSError:
        pass
    return {"model": name or platform.processor() or platform.machine(), "machine": platform.machine(),
            "logical_cores": os.cpu_count()}


def _environment_versions() -> dict[str, str]:
    """What a latency figure depends on: the runtime stack's versions and the platform."""
    versions = {"numpy": np.__version__, "torch": torch.__version__, "onnxruntime": ort.__version__,
                "platform": platform.platform()}
    return {**versions, **{k: v or "not installed" for k, v in package_versions(("fedunlearn", "onnx")).items()}}


def run_edge_bench(model_path: Path, *, repeats: int = 50, warmup: int = 5, torch_model: Path | None = None,
                   seed: int = 0) -> EdgeBench:
    """Benchmark the fp32 export at ``model_path``, its int8 sibling and its torch checkpoint (when found).

    Inputs: uniform random raw values in the manifest's range, preprocessed once, shape (32, C, H, W);
    batch 1 is the first of them. Random pixels are fine for latency, meaningless for accuracy.
    """
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    model_path = Path(model_path)
    fp32 = EdgeModel.open(model_path, threads=1)
    manifest = fp32.manifest
    int8_path = _int8_file(model_path, manifest)
    checkpoint = _checkpoint_path(manifest, torch_model)
    rng = np.random.default_rng(seed)
    raw = rng.uniform(manifest.raw_min, manifest.raw_max, size=(max(BATCH_SIZES), *manifest.input_chw))
    x = preprocess(raw, manifest)
    timing = {"repeats": repeats, "warmup": warmup}
    engines: dict[str, EngineResult | None] = {"torch": None, "ort_fp32": None, "ort_int8": None}
    with _one_torch_thread():
        reference = None
        if checkpoint is not None:
            run = _torch_run(checkpoint, manifest)
            engines["torch"] = _measure(run, x, None, file=str(checkpoint), size=checkpoint.stat().st_size, **timing)
            reference = run(x)
        fp32_run = _ort_run(fp32)
        engines["ort_fp32"] = _measure(fp32_run, x, reference, file=model_path.name,
                                       size=model_path.stat().st_size, **timing)
        reference = fp32_run(x) if reference is None else reference
        if int8_path is not None:
            engines["ort_int8"] = _measure(_ort_run(EdgeModel.open(int8_path, threads=1)), x, reference,
                                           file=int8_path.name, size=int8_path.stat().st_size, **timing)
        torch_threads = torch.get_num_threads()
    return _assemble(fp32, engines, timing, torch_threads)


def _ratio(a: EngineResult | None, b: EngineResult | None) -> float | None:
    return None if a is None or b is None else a.b1.median_ms / b.b1.median_ms


def _assemble(fp32: EdgeModel, engines: dict[str, EngineResult | None], timing: dict[str, int],
              torch_threads: int) -> EdgeBench:
    manifest, eager, onnx32, int8 = fp32.manifest, engines["torch"], engines["ort_fp32"], engines["ort_int8"]
    fp32_bytes = onnx32.bytes if onnx32 else None
    int8_bytes = int8.bytes if int8 else None
    return EdgeBench(
        model=str(fp32.path), architecture=str(manifest.architecture),
        parent_model_sha256=str(manifest.parent_model_sha256),
        input_shape=[None, *manifest.input_chw], engines=engines,
        ratios={"ort_fp32_vs_torch_b1": _ratio(onnx32, eager), "int8_vs_fp32_b1": _ratio(int8, onnx32)},
        sizes={"fp32_bytes": fp32_bytes, "int8_bytes": int8_bytes,
               "int8_vs_fp32": int8_bytes / fp32_bytes if int8_bytes and fp32_bytes else None},
        threads={"torch_intra_op": torch_threads, "torch_inter_op": torch.get_num_interop_threads(),
                 "ort_intra_op": 1, "ort_inter_op": 1},
        cpu=_cpu(), versions=_environment_versions(), created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        repeats=timing["repeats"], warmup=timing["warmup"],
    )


def write_edge_bench(result: EdgeBench, out: Path) -> Path:
    """Write ``result`` as JSON atomically (temp file + rename); returns ``out``."""
    atomic_write_json(Path(out), result.to_dict())
    return Path(out)
