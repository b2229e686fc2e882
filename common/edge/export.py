"""Torch classifier -> one fp32 ONNX file, checked before it replaces anything.

The file is what an edge device runs, so it is only moved into place after
``onnx.checker`` (full check) and a parity run of ONNX Runtime against torch on
real inputs at several batch sizes (1 among them: the batch dimension must be
dynamic, not baked in from the tracing example). Everything happens in a
private temporary folder beside the target, so a failed export leaves an
existing good file byte-identical and no sidecar behind.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from fedunlearn.common.errors import ModelError
from fedunlearn.common.files import sha256_file
from fedunlearn.common.models import ModelSpec

__all__ = ["INPUT_NAME", "OPSET", "OUTPUT_NAME", "ExportInfo", "ExporterName", "export_onnx", "staging_dir"]

logger = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 18
# Parity passes where |ort - torch| <= ATOL + RTOL * |torch| for every logit (numpy's allclose rule):
# float32 kernels that sum in another order differ by a few ulps, and one ulp of a logit of 100 is 8e-6.
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-5
# Batch sizes the parity check runs besides the whole example: 1 and an odd size prove the
# batch dimension is dynamic (the tracing example has 2 rows).
_PARITY_BATCHES = (1, 7)

ExporterName = Literal["dynamo", "torchscript"]


@dataclass(frozen=True)
class ExportInfo:
    """What the manifest records about an fp32 export.

    max_abs_diff: largest |ORT logit - torch logit| over ``samples`` inputs, every batch size
    max_abs_logit: largest |torch logit| there (what the difference is relative to)
    batch_sizes:  the batch sizes the parity check ran (1 among them)
    warnings:     what went wrong on the way but did not stop the export (e.g. the fallback)
    """

    path: Path
    sha256: str
    bytes: int
    exporter: ExporterName
    opset: int
    max_abs_diff: float
    max_abs_logit: float
    samples: int
    batch_sizes: tuple[int, ...]
    warnings: tuple[str, ...]


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A private folder beside ``target`` (same filesystem, so os.replace is atomic), removed after."""
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".staging"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def export_onnx(model: nn.Module, spec: ModelSpec, path: Path, *, example: torch.Tensor,
                atol: float = PARITY_ATOL, rtol: float = PARITY_RTOL) -> ExportInfo:
    """Export ``model`` to ``path`` (input "input" (N, C, H, W), output "logits" (N, K), N dynamic).

    ``example``: (N, C, H, W) real, preprocessed inputs; the parity check runs all of them, and
    ``example[:1]`` and ``example[:7]`` on their own. Raises ModelError (nothing written) when both
    exporters fail, the checker rejects the graph or a logit differs by more than ``atol + rtol * |logit|``.
    """
    path = Path(path)
    expected = (spec.in_channels, spec.image_size, spec.image_size)
    if example.ndim != 4 or tuple(example.shape[1:]) != expected or len(example) == 0:
        raise ModelError(f"export example must be (N, {', '.join(map(str, expected))}) inputs for {spec.name}, "
                         f"got {tuple(example.shape)}")
    # A CPU, eval-mode copy: the caller's model keeps its device and mode.
    module = copy.deepcopy(model).cpu().eval()
    example = example.detach().cpu().float()
    with staging_dir(path) as folder:
        draft = folder / path.name
        exporter, notes = _export_with_fallback(module, example, draft)
        _inline_external_data(draft, folder)
        opset = _check_graph(draft, spec)
        parity = _parity(module, draft, example, rtol)
        if not parity.excess <= atol:  # also catches NaN
            raise ModelError(f"ONNX export of {spec.name} disagrees with torch: max |logit diff| "
                             f"{parity.max_abs_diff:.3g} (logits up to {parity.max_abs_logit:.3g}) exceeds "
                             f"{atol:g} + {rtol:g} * |logit| ({exporter} exporter); the model was not written")
        digest, size = sha256_file(draft), draft.stat().st_size
        os.replace(draft, path)
    return ExportInfo(path=path, sha256=digest, bytes=size, exporter=exporter,
                      opset=opset, max_abs_diff=parity.max_abs_diff, max_abs_logit=parity.max_abs_logit,
                      samples=len(example), batch_sizes=parity.batch_sizes, warnings=tuple(notes))


def _export_with_fallback(module: nn.Module, example: torch.Tensor, draft: Path) -> tuple[ExporterName, list[str]]:
    """The dynamo exporter; the TorchScript one only if dynamo raises, said loudly (warning + log)."""
    trace = example[:2] if len(example) >= 2 else example.repeat(2, 1, 1, 1)  # batch 1 would be specialised
    try:
        _export_dynamo(module, trace, draft)
        return "dynamo", []
    except Exception as err:
        note = (f"dynamo ONNX export failed ({type(err).__name__}: {_first_line(err)}); "
                "fell back to the TorchScript exporter")
        warnings.warn(note, RuntimeWarning, stacklevel=3)
        logger.warning(note)
        for leftover in draft.parent.iterdir():
            leftover.unlink()
    try:
        _export_torchscript(module, trace, draft)
    except Exception as err:
        raise ModelError(f"{note}, which failed too ({type(err).__name__}: {_first_line(err)})") from err
    return "torchscript", [note]


def _export_dynamo(module: nn.Module, trace: torch.Tensor, draft: Path) -> None:
    batch = torch.export.Dim("batch")
    torch.onnx.export(module, (trace,), str(draft), dynamo=True, external_data=False, opset_version=OPSET,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},),
                      verbose=False)


def _export_torchscript(module: nn.Module, trace: torch.Tensor, draft: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the deprecation is why it is only the fallback
        torch.onnx.export(module, (trace,), str(draft), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else "no message"


def _inline_external_data(draft: Path, folder: Path) -> None:
    """One file on the device: fold any ``.data`` sidecar back into the model (refuse past 2 GB)."""
    sidecars = [p for p in folder.iterdir() if p != draft]
    if not sidecars:
        return
    proto = onnx.load(str(draft), load_external_data=True)
    if proto.ByteSize() >= 2**31:
        raise ModelError(f"the ONNX model is {proto.ByteSize()} bytes: too large for one file (2 GB protobuf "
                         "limit); external data is not supported on the edge")
    onnx.save_model(proto, str(draft), save_as_external_data=False)
    for sidecar in sidecars:
        sidecar.unlink()


def _check_graph(draft: Path, spec: ModelSpec) -> int:
    """Full checker, then the contract: one input "input" and one output "logits", batch dim dynamic."""
    try:
        onnx.checker.check_model(str(draft), full_check=True)
    except onnx.checker.ValidationError as err:
        raise ModelError(f"the exported ONNX graph of {spec.name} fails onnx.checker: {_first_line(err)}") from err
    proto = onnx.load(str(draft), load_external_data=False)
    for values, name, rest in ((proto.graph.input, INPUT_NAME, [spec.in_channels, spec.image_size,
                                                                spec.image_size]),
                               (proto.graph.output, OUTPUT_NAME, [spec.num_classes])):
        dims = [d for v in values for d in v.type.tensor_type.shape.dim]
        found = [v.name for v in values]
        if found != [name] or [d.dim_value for d in dims[1:]] != rest or not dims[0].dim_param:
            shape = [d.dim_param or d.dim_value for d in dims]
            raise ModelError(f"exported graph has {found} {shape}; expected {name!r} [batch, "
                             f"{', '.join(map(str, rest))}] with a dynamic batch")
    return next((op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")), 0)


@dataclass(frozen=True)
class _Parity:
    max_abs_diff: float
    max_abs_logit: float
    excess: float  # max over logits of |diff| - rtol * |torch logit|
    batch_sizes: tuple[int, ...]


def _parity(module: nn.Module, draft: Path, example: torch.Tensor, rtol: float) -> _Parity:
    """ORT against torch over the whole example and its first 1 and 7 rows."""
    session = ort.InferenceSession(str(draft), providers=["CPUExecutionProvider"])
    sizes = tuple(sorted({min(b, len(example)) for b in (*_PARITY_BATCHES, len(example))}))
    diff = logit = excess = 0.0
    with torch.no_grad():
        for size in sizes:
            batch = example[:size]
            expected = module(batch).numpy()
            (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})
            if got.shape != expected.shape:
                raise ModelError(f"ONNX Runtime returned logits {got.shape} for a batch of {size}, "
                                 f"torch {expected.shape}")
            gap = np.abs(got - expected)
            diff, logit = max(diff, float(gap.max())), max(logit, float(np.abs(expected).max()))
            excess = max(excess, float((gap - rtol * np.abs(expected)).max()))
    return _Parity(diff, logit, excess, sizes)
