"""The CLI starts without torch, Flower or ONNX: importing it, asking for help, filing and listing requests,
predicting.

Each check runs in a fresh interpreter (this one has torch loaded already) and
looks at ``sys.modules`` afterwards: a behaviour check, not a timing one
(``python -m fedunlearn.simulations.bench_startup`` measures the time and memory).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.nodes import NodeDirectory, NodeLayout, materialise_node
from tests.edge.exports import copy_export

HEAVY = ("torch", "torchvision", "flwr", "onnx")
ROOT = Path(__file__).resolve().parents[2]
PROBE = f"""
import sys
out, argv = sys.argv[1], sys.argv[2:]
import fedunlearn.client.cli, fedunlearn.simulations.edge_cli
from fedunlearn.simulations.cli import main
if argv:
    sys.argv = ["fedunlearn", *argv]
    try:
        main()
    except SystemExit as exit_:
        if exit_.code:
            raise
loaded = {{name.partition(".")[0] for name in sys.modules}}
with open(out, "w") as file:
    file.write(" ".join(sorted(loaded & {set(HEAVY)!r})))
"""


def _heavy_modules_after(tmp_path: Path, *args: str) -> set[str]:
    """The HEAVY top-level packages in ``sys.modules`` once the CLI ran ``args`` (or was only imported)."""
    out = tmp_path / "modules.txt"
    done = subprocess.run([sys.executable, "-c", PROBE, str(out), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return set(out.read_text().split())


def test_importing_the_cli_loads_no_torch_flower_or_onnx(tmp_path: Path) -> None:
    assert _heavy_modules_after(tmp_path) == set()


def test_help_loads_no_torch_flower_or_onnx(tmp_path: Path) -> None:
    for args in (["--help"], ["node", "--help"], ["edge", "--help"], ["node", "forget", "--help"]):
        assert _heavy_modules_after(tmp_path, *args) == set(), args


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("startup") / "node"
    materialise_node(path, load_dataset("digits", seed=0), NodeLayout("digits", 0, 4))
    return path


def test_filing_listing_and_rejecting_requests_load_no_torch(node_dir: Path, tmp_path: Path) -> None:
    node = NodeDirectory.open(node_dir)
    train = node.train()
    k = int(train.y[0])
    for target in (("--ids", f"{int(train.ids[train.y != k][0])}"), ("--class", str(k)), ("--all",)):
        assert _heavy_modules_after(tmp_path, "node", "forget", "--node-dir", str(node_dir), *target,
                                    "--reason", "startup check") == set(), target
    assert [r.kind for r in node.ledger.list()] == ["ids", "class", "all"]
    assert _heavy_modules_after(tmp_path, "node", "requests", "--node-dir", str(node_dir)) == set()
    assert _heavy_modules_after(tmp_path, "node", "reject", "--node-dir", str(node_dir), "--request-id",
                                node.ledger.list()[0].request_id, "--reason", "hold") == set()


def test_edge_predict_loads_no_torch_flower_or_onnx(tmp_path: Path, edge_export: Path) -> None:
    export = copy_export(edge_export, tmp_path / "model")
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), dtype=np.float32))
    predict = ("edge", "predict", str(export / "model.onnx"), str(tmp_path / "x.npy"))
    assert _heavy_modules_after(tmp_path, *predict) == set()
