"""An exported model as the audit and the server's accuracy see it: inputs in, logits out.

The leakage audit grades a torch model, an fp32 ONNX export and its int8
quantisation through the same ``Logits`` function, so only the pass that
produces the logits differs. Inputs are already normalised (node and test data
are), exactly what the ONNX graph expects.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnxruntime as ort
import torch

from fedunlearn.common.audit.signals import Logits
from fedunlearn.common.errors import ModelError
from fedunlearn.common.training import EVAL_BATCH

__all__ = ["onnx_logits"]


def onnx_logits(model_bytes: bytes, *, expected_sha256: str | None = None, threads: int = 1) -> Logits:
    """An ONNX Runtime (CPU) session over ``model_bytes``; refuses bytes whose sha256 is not the expected one."""
    if expected_sha256 is not None and hashlib.sha256(model_bytes).hexdigest() != expected_sha256:
        raise ModelError("the ONNX model bytes do not match their sha256; refusing to audit them")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own exception types for a corrupt graph
        raise ModelError(f"ONNX Runtime cannot load the model ({type(err).__name__}: {err})") from err
    name = session.get_inputs()[0].name

    def logits(x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().numpy().astype(np.float32, copy=False)
        parts = [session.run(None, {name: array[i : i + EVAL_BATCH]})[0]
                 for i in range(0, len(array), EVAL_BATCH)]
        return torch.from_numpy(np.concatenate(parts)) if parts else torch.zeros(0)

    return logits
