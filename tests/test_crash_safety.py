"""A node process killed (SIGKILL) at every step of unlearning and commit loses no request and never
shows one committed that was not: afterwards the request is either pending with its samples intact,
or committed with its samples purged and its receipt written."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.nodes import NodeDirectory, NodeLayout, RequestStatus, materialise_node

# The child opens the node, then kills itself with SIGKILL right after the step named by CRASH_AT.
CHILD = textwrap.dedent("""
    import os, signal, sys, torch
    import fedunlearn.common.nodes.directory as directory
    import fedunlearn.common.nodes.storage as storage
    from fedunlearn.common.nodes import NodeDirectory
    from fedunlearn.common.unlearning import UnlearningTask, run_method, parse_params
    from fedunlearn.common.unlearning.reference import build_reference
    from fedunlearn.common.models import ModelSpec, build_model
    from fedunlearn.common.training import TrainConfig

    node_dir, request_id, crash_at = sys.argv[1], sys.argv[2], sys.argv[3]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def after(module, name, step, when=lambda *args: True):
        original = getattr(module, name)
        def wrapped(*args, **kwargs):
            result = original(*args, **kwargs)
            if crash_at == step and when(*args):
                die()
            return result
        setattr(module, name, wrapped)

    after(directory.Ledger, "commit", "after-ledger-commit")
    after(directory, "write_samples", "after-new-data-file")
    after(directory, "atomic_write_json", "after-node-json", when=lambda path, *rest: path.name == "node.json")
    node = NodeDirectory.open(node_dir)
    request = node.ledger.get(request_id)
    spec = ModelSpec("cnn", 1, 8, 10)
    task = UnlearningTask(original=build_model(spec, seed=0), spec=spec, retain=node.retain(),
                          forget=node.forget_set([request]), reference=build_reference(node.holdout(), "sample"),
                          recipe=TrainConfig(), granularity="sample", device=torch.device("cpu"), seed=0)
    import fedunlearn.common.unlearning.remi as remi
    after(remi, "local_audit", "during-unlearning")  # ReMI's first audit, before any step is kept
    run_method("remi", task, parse_params("remi", {"max_steps": 5}))
    node.commit([request_id], {"model_hash_before": "a", "model_hash_after": "b", "audit": {}})
    print("finished")
""")

STEPS = ["during-unlearning", "after-ledger-commit", "after-new-data-file", "after-node-json", "none"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[int]]:
    path = tmp_path_factory.mktemp("template") / "node"
    node = materialise_node(path, load_dataset("digits"), NodeLayout("digits", 0, 3))
    forget_ids = node.train().ids[:15].tolist()
    request = node.submit(ids=forget_ids, reason="test")
    return path, request.request_id, forget_ids


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", STEPS)
def test_a_killed_node_keeps_its_requests_consistent(
    tmp_path: Path, template: tuple[Path, str, list[int]], crash_at: str
) -> None:
    source, request_id, forget_ids = template
    node_dir = tmp_path / "node"
    shutil.copytree(source, node_dir)
    child = subprocess.run([sys.executable, "-c", CHILD, str(node_dir), request_id, crash_at],
                           capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    if crash_at == "none":
        assert child.returncode == 0, child.stderr
    else:
        assert child.returncode == -9, child.stderr  # it really was killed at that step

    node = NodeDirectory.open(node_dir)  # what a restarted node sees
    request = node.ledger.get(request_id)
    on_disk = set(node.train().ids.tolist())
    if request.status is RequestStatus.COMMITTED:
        assert crash_at in ("after-ledger-commit", "after-new-data-file", "after-node-json", "none")
        assert not set(forget_ids) & on_disk
        assert node.receipt_path(request_id).is_file()
    else:
        assert request.status is RequestStatus.PENDING
        assert crash_at == "during-unlearning"
        assert set(forget_ids) <= on_disk
    assert len(list((node_dir / "data").glob("train-*.pt"))) == 1  # no orphan left behind
