"""Suite-wide settings: one intra-op thread, so tests on two CI cores do not oversubscribe; the session's
one hand-made ONNX export, shared by the edge runtime, edge bench and CLI startup tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.edge.exports import make_export


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def edge_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make_export``'s root/export (fp32 model.onnx and manifest.json beside root/model.pt), exported once.
    Read only: a test that writes into it or needs the int8 file works on ``copy_export(edge_export, ...)``."""
    return make_export(tmp_path_factory.mktemp("edge-export"))
