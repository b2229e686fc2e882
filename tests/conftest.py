"""Suite-wide settings: one intra-op thread, so tests on two CI cores do not oversubscribe; costly shared
fixtures built once per run; the loopback deployments one at a time; the session's one hand-made ONNX
export, shared by the edge runtime, edge bench and CLI startup tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.edge.exports import make_export

# Module- or session-scoped fixtures that cost a federation or a bench run. pytest-xdist builds such a fixture
# once on every worker that meets a test needing it; scripts/test.sh runs --dist loadgroup, so every test that
# reads one goes to the xdist group named after it, and the fixture is built once per run.
BUILT_ONCE = frozenset({"tiny_run", "bench_dir", "random_run", "ulira_run", "edge_bench", "load_bench",
                        "memorising_world"})


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns the groups into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group the tests of each costly fixture, and start the slow tests first: they are the long chains
    (deployments, federations) that bound a parallel run's wall time, and the fast ones fill in around them."""
    for item in items:
        for name in sorted(BUILT_ONCE.intersection(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.xdist_group(name))
        if "deployment" in item.path.parts:
            # one loopback deployment at a time: two at once on two cores starved a SuperLink until its
            # SQLite said "database is locked" (HTTP 500), and Flower's SuperNode exits on that
            item.add_marker(pytest.mark.xdist_group("deployment"))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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
