"""Node directories on digits: the data they hold, the requests they accept, purges, and crash repair."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import torch

from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.data.tensors import DatasetBundle
from fedunlearn.common.errors import ConfigError, DataError, RequestError
from fedunlearn.common.nodes import (
    NodeDirectory,
    NodeLayout,
    NodeRecords,
    RequestStatus,
    directory,
    materialise_node,
    records,
)

PARTITIONS = 5
REASON = "data subject asked for erasure"


@pytest.fixture(scope="module")
def digits() -> DatasetBundle:
    return load_dataset("digits")


def _layout(partition: int, **overrides: object) -> NodeLayout:
    return NodeLayout(dataset="digits", partition=partition, num_partitions=PARTITIONS, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def node(tmp_path: Path, digits: DatasetBundle) -> NodeDirectory:
    return materialise_node(tmp_path / "node", digits, _layout(3))


def _ids(values: torch.Tensor) -> list[int]:
    return sorted(values.tolist())


def _absent_class(node: NodeDirectory) -> int | None:
    present = set(node.train().y.tolist())
    return next((k for k in range(node.num_classes) if k not in present), None)


# --- materialise -----------------------------------------------------------------------------------------


def test_partitions_are_disjoint_and_inside_the_train_split(tmp_path: Path, digits: DatasetBundle) -> None:
    nodes = [materialise_node(tmp_path / f"p{i}", digits, _layout(i)) for i in range(PARTITIONS)]
    seen: list[int] = []
    for node in nodes:
        train, holdout = node.train(), node.holdout()
        assert len(train) > 0 and len(holdout) > 0
        assert not set(train.ids.tolist()) & set(holdout.ids.tolist())
        seen += train.ids.tolist() + holdout.ids.tolist()
    assert len(seen) == len(set(seen)), "a sample is on two nodes (or twice on one)"
    assert set(seen) <= set(digits.train.ids.tolist())
    assert not set(seen) & set(digits.test.ids.tolist())  # digits ids are global: the test split is never on a node
    # the samples are the dataset's own: same pixels and label under the same id
    position = {int(i): p for p, i in enumerate(digits.train.ids.tolist())}
    train = nodes[0].train()
    rows = torch.tensor([position[int(i)] for i in train.ids])
    assert torch.equal(train.x, digits.train.x[rows])
    assert torch.equal(train.y, digits.train.y[rows])


def test_the_same_layout_gives_the_same_ids(tmp_path: Path, digits: DatasetBundle) -> None:
    a = materialise_node(tmp_path / "a", digits, _layout(2))
    b = materialise_node(tmp_path / "b", digits, _layout(2))
    assert _ids(a.train().ids) == _ids(b.train().ids)
    assert _ids(a.holdout().ids) == _ids(b.holdout().ids)
    other_seed = materialise_node(tmp_path / "c", digits, _layout(2, seed=1))
    assert _ids(other_seed.train().ids) != _ids(a.train().ids)


def test_holdout_fraction_and_train_size_are_honoured(tmp_path: Path, digits: DatasetBundle) -> None:
    node = materialise_node(tmp_path / "n", digits, _layout(0, holdout_fraction=0.5, train_size=500))
    train, holdout = len(node.train()), len(node.holdout())
    assert abs(train - holdout) <= 1
    total = sum(
        len(n.train()) + len(n.holdout())
        for n in (materialise_node(tmp_path / f"s{i}", digits, _layout(i, train_size=500)) for i in range(PARTITIONS))
    )
    assert total == 500


def test_materialise_refuses_an_existing_node(node: NodeDirectory, digits: DatasetBundle) -> None:
    request = node.submit(ids=node.train().ids[:2].tolist(), reason=REASON)
    with pytest.raises(ConfigError, match="already holds a node"):
        materialise_node(node.path, digits, _layout(3))
    assert NodeDirectory.open(node.path).ledger.get(request.request_id).status is RequestStatus.PENDING


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"partition": 5}, r"partition must be in 0\.\.4"),
        ({"partition": -1}, r"partition must be in 0\.\.4"),
        ({"holdout_fraction": 0.0}, "holdout_fraction"),
        ({"holdout_fraction": 1.0}, "holdout_fraction"),
        ({"partitioner": "bogus"}, "partitioner"),
    ],
)
def test_layout_validation(overrides: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"dataset": "digits", "partition": 0, "num_partitions": PARTITIONS, **overrides}
    with pytest.raises(ConfigError, match=message):
        NodeLayout(**fields)  # type: ignore[arg-type]


def test_train_size_out_of_range_is_refused(tmp_path: Path, digits: DatasetBundle) -> None:
    with pytest.raises(ConfigError, match="train_size"):
        materialise_node(tmp_path / "n", digits, _layout(0, train_size=len(digits.train) + 1))


# --- submit ----------------------------------------------------------------------------------------------


def test_submit_ids(node: NodeDirectory) -> None:
    ids = node.train().ids[[0, 5, 7]].tolist()
    request = node.submit(ids=ids, reason=REASON)
    assert request.kind == "ids" and request.sample_ids == tuple(sorted(ids))
    assert [r.request_id for r in node.ledger.pending()] == [request.request_id]


def test_submit_refuses_bad_ids_and_records_nothing(tmp_path: Path, node: NodeDirectory, digits: DatasetBundle) -> None:
    other = materialise_node(tmp_path / "other", digits, _layout(1))
    own = node.train().ids[:3].tolist()
    cases = {
        "unknown": [*own, 10**9],
        "another partition": [*own, int(other.train().ids[0])],
        "this node's hold-out": [int(node.holdout().ids[0])],
    }
    for ids in cases.values():
        with pytest.raises(RequestError, match="not training samples of this node"):
            node.submit(ids=ids, reason=REASON)
    with pytest.raises(RequestError, match="names no sample ids"):
        node.submit(ids=[], reason=REASON)
    with pytest.raises(RequestError, match="exactly one"):
        node.submit(ids=own, target_class=1, reason=REASON)
    with pytest.raises(RequestError, match="exactly one"):
        node.submit(reason=REASON)
    assert node.ledger.list() == []
    assert len(node.retain()) == len(node.train())


def test_submit_class(node: NodeDirectory) -> None:
    train = node.train()
    k = int(train.y[0])
    request = node.submit(target_class=k, reason=REASON)
    assert (request.kind, request.target_class) == ("class", k)
    assert list(request.sample_ids) == _ids(train.ids[train.y == k])
    assert k not in node.retain().y.tolist()


def test_submit_class_the_node_does_not_hold(tmp_path: Path, digits: DatasetBundle) -> None:
    # find a partition that lacks some class (dirichlet:0.5 over 5 partitions leaves gaps)
    for partition in range(PARTITIONS):
        node = materialise_node(tmp_path / f"p{partition}", digits, _layout(partition))
        missing = _absent_class(node)
        if missing is not None:
            break
    else:
        pytest.fail("every partition holds every class; pick a more skewed layout for this test")
    with pytest.raises(RequestError, match=f"no training sample of class {missing}"):
        node.submit(target_class=missing, reason=REASON)
    with pytest.raises(RequestError, match=r"class must be in 0\.\.9"):
        node.submit(target_class=10, reason=REASON)
    assert node.ledger.list() == []


def test_submit_everything_takes_what_is_not_already_held(node: NodeDirectory) -> None:
    train = node.train()
    first = node.submit(ids=train.ids[:4].tolist(), reason=REASON)
    leaving = node.submit(everything=True, reason="node leaves the federation")
    assert leaving.kind == "all"
    assert set(leaving.sample_ids) == set(train.ids.tolist()) - set(first.sample_ids)
    assert len(node.retain()) == 0
    with pytest.raises(RequestError, match="already under a request"):
        node.submit(everything=True, reason=REASON)


def test_retain_excludes_pending_ids_at_once(node: NodeDirectory) -> None:
    train = node.train()
    ids = train.ids[10:20].tolist()
    node.submit(ids=ids, reason=REASON)
    retain = node.retain()
    assert len(retain) == len(train) - 10
    assert not set(retain.ids.tolist()) & set(ids)
    assert len(node.train()) == len(train)  # pending samples are still on disk, just never trained on
    assert _ids(node.forget_set(node.ledger.pending()).ids) == sorted(ids)


# --- the sample index: requests are checked against it, never the samples ---------------------------------


def _no_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(directory, "read_samples", lambda *a, **k: pytest.fail("filing read the samples"))


def test_submit_checks_the_index_and_reads_no_samples(node: NodeDirectory, monkeypatch: pytest.MonkeyPatch) -> None:
    train = node.train()
    k = int(train.y[0])
    _no_samples(monkeypatch)
    with pytest.raises(RequestError, match="1 id"):
        node.submit(ids=[10**9], reason=REASON)
    by_ids = node.submit(ids=train.ids[train.y != k][:2].tolist(), reason=REASON)
    by_class = node.submit(target_class=k, reason=REASON)
    leaving = node.submit(everything=True, reason=REASON)
    assert list(by_class.sample_ids) == _ids(train.ids[train.y == k])
    assert sorted(by_ids.sample_ids + by_class.sample_ids + leaving.sample_ids) == _ids(train.ids)


def test_the_index_is_hashed_once_per_file_and_follows_a_purge(node: NodeDirectory,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    real = records.read_index
    monkeypatch.setattr(records, "read_index", lambda folder, ref: reads.append(ref["path"]) or real(folder, ref))
    server = NodeRecords.open(node.path)  # a long-lived reader, as the request server is
    ids = node.train().ids[:4].tolist()
    first = server.submit(ids=ids[:2], reason=REASON)
    server.submit(ids=ids[2:3], reason=REASON)
    assert len(reads) == 1
    node.commit([first.request_id], {"model_sha256": "0" * 64})  # another process purges: a new index file
    with pytest.raises(RequestError, match="not training samples"):
        server.submit(ids=ids[:1], reason=REASON)
    server.submit(ids=ids[3:], reason=REASON)
    assert len(reads) == 2 and reads[1] == node.meta["files"]["train_index"]["path"] != reads[0]


def _as_made_before_indexes(node: NodeDirectory) -> None:
    meta = json.loads((node.path / "node.json").read_text())
    (node.path / "data" / meta["files"].pop("train_index")["path"]).unlink()
    (node.path / "node.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("opener", [NodeRecords, NodeDirectory])
def test_a_node_made_before_indexes_is_indexed_when_opened(node: NodeDirectory, opener: type[NodeRecords]) -> None:
    expected = sorted(node.train().ids.tolist())
    _as_made_before_indexes(node)
    opened = opener.open(node.path)
    ref = opened.meta["files"]["train_index"]
    assert json.loads((node.path / "node.json").read_text())["files"]["train_index"] == ref
    assert (node.path / "data" / ref["path"]).stat().st_mode & 0o777 == 0o600
    assert list(opened.index().ids) == expected
    assert opened.submit(ids=expected[:2], reason=REASON).sample_ids == tuple(expected[:2])


@pytest.mark.parametrize("damage", ["altered", "missing"])
def test_a_damaged_index_is_a_data_error(node: NodeDirectory, damage: str) -> None:
    path = node.path / "data" / node.meta["files"]["train_index"]["path"]
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-1] + b"\xff")
    message = "is missing" if damage == "missing" else "sha256"
    for call in (lambda: NodeDirectory.open(node.path), lambda: NodeRecords.open(node.path).submit(
            everything=True, reason=REASON)):
        with pytest.raises(DataError, match=message):
            call()
    assert node.ledger.list() == []


# --- commit and purge ------------------------------------------------------------------------------------


def test_commit_purges_the_samples_and_writes_receipts(node: NodeDirectory) -> None:
    train = node.train()
    old_file = node.path / "data" / node.meta["files"]["train"]["path"]
    a = node.submit(ids=train.ids[:3].tolist(), reason=REASON)
    b = node.submit(ids=train.ids[3:8].tolist(), reason=REASON)
    kept = node.submit(ids=train.ids[8:9].tolist(), reason=REASON)
    paths = node.commit([a.request_id, b.request_id], {"model_sha256": "f" * 64, "round": 7})

    assert paths == [node.receipt_path(a.request_id), node.receipt_path(b.request_id)]
    gone = set(a.sample_ids) | set(b.sample_ids)
    assert not set(node.train().ids.tolist()) & gone
    assert len(node.train()) == len(train) - 8
    assert int(train.ids[8]) in node.train().ids.tolist()  # the still-pending request keeps its sample
    assert not old_file.exists()
    # the raw samples are gone from every file on disk, not only from what train() returns
    for stored in (node.path / "data").glob("*.pt"):
        blob = torch.load(stored, weights_only=True)
        assert not set(blob["ids"].tolist()) & gone
    assert list(node.index().ids) == sorted(node.train().ids.tolist())  # the index follows the purge
    for request, count in ((a, 3), (b, 5)):
        receipt = json.loads(node.receipt_path(request.request_id).read_text())
        assert receipt["model_sha256"] == "f" * 64 and receipt["round"] == 7
        assert receipt["request_id"] == request.request_id
        assert receipt["num_samples"] == count
        assert receipt["kind"] == "ids"
        assert node.ledger.get(request.request_id).status is RequestStatus.COMMITTED
        assert node.ledger.get(request.request_id).receipt == receipt
    assert node.ledger.get(kept.request_id).status is RequestStatus.PENDING
    reopened = NodeDirectory.open(node.path)
    assert _ids(reopened.train().ids) == _ids(node.train().ids)


def test_commit_with_a_bad_request_changes_nothing(node: NodeDirectory) -> None:
    train = node.train()
    a = node.submit(ids=train.ids[:3].tolist(), reason=REASON)
    with pytest.raises(RequestError):
        node.commit([a.request_id, "req-unknown"], {"model_sha256": "0"})
    with pytest.raises(RequestError):
        node.commit([], {"model_sha256": "0"})
    assert node.ledger.get(a.request_id).status is RequestStatus.PENDING
    assert len(node.train()) == len(train)
    assert not (node.path / "receipts").exists() or not any((node.path / "receipts").iterdir())


def test_open_finishes_a_purge_a_crash_interrupted(node: NodeDirectory) -> None:
    train = node.train()
    request = node.submit(ids=train.ids[:6].tolist(), reason=REASON)
    receipt = {"model_sha256": "e" * 64, "request_id": request.request_id, "num_samples": 6}
    node.ledger.commit({request.request_id: receipt})  # the crash: ledger landed, no receipt file, no purge
    assert len(node.train()) == len(train)
    assert not node.receipt_path(request.request_id).exists()

    reopened = NodeDirectory.open(node.path)
    assert not set(reopened.train().ids.tolist()) & set(request.sample_ids)
    assert len(reopened.train()) == len(train) - 6
    assert json.loads(reopened.receipt_path(request.request_id).read_text()) == receipt
    assert len(list((node.path / "data").glob("train-*.pt"))) == 1


def test_open_removes_orphan_data_files(node: NodeDirectory) -> None:
    orphan = node.path / "data" / "train-0123456789ab.pt"
    orphan.write_bytes(b"half-written by a crashed purge")
    orphan_index = node.path / "data" / "train-0123456789ab.index"
    orphan_index.write_bytes(b"written by a purge that never reached node.json")
    pending = node.path / "data" / ".train.pending"
    pending.write_bytes(b"temp")
    NodeDirectory.open(node.path)
    assert not orphan.exists() and not orphan_index.exists() and not pending.exists()
    assert sorted(p.name for p in (node.path / "data").iterdir()) == sorted(
        ref["path"] for ref in node.meta["files"].values()
    )


@pytest.mark.parametrize("part", ["train", "holdout"])
def test_a_tampered_data_file_is_a_data_error(node: NodeDirectory, part: str) -> None:
    path = node.path / "data" / node.meta["files"][part]["path"]
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    path.write_bytes(bytes(payload))
    with pytest.raises(DataError, match="sha256"):
        getattr(node, part)()
    if part == "train":
        with pytest.raises(DataError, match="sha256"):
            NodeDirectory.open(node.path)


def test_a_missing_node_json_is_a_data_error(node: NodeDirectory) -> None:
    (node.path / "node.json").unlink()
    with pytest.raises(DataError, match="not a node directory"):
        NodeDirectory.open(node.path)


def test_an_unreadable_node_json_is_a_data_error(node: NodeDirectory) -> None:
    (node.path / "node.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        NodeDirectory.open(node.path)


# --- untrusted reasons and private files ------------------------------------------------------------------


@pytest.mark.parametrize(("reason", "message"), [
    ("x" * 1001, "1001 characters, more than 1000"),
    ("erase me \udcff", "not valid UTF-8"),  # an undecodable byte in argv
    (" \t", "needs a reason"),
])
def test_submit_refuses_a_bad_reason_and_records_nothing(node: NodeDirectory, reason: str, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        node.submit(everything=True, reason=reason)
    assert node.ledger.list() == []
    assert node.submit(everything=True, reason="y" * 1000).reason == "y" * 1000  # the bound itself is fine


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}


def test_a_node_is_private_whatever_the_umask(tmp_path: Path, digits: DatasetBundle) -> None:
    previous = os.umask(0o022)
    try:
        node = materialise_node(tmp_path / "node", digits, _layout(3))
        with sqlite3.connect(node.ledger.path) as reader:  # an open reader keeps -wal and -shm on disk
            reader.execute("SELECT COUNT(*) FROM requests").fetchone()
            request = node.submit(ids=node.train().ids[:2].tolist(), reason=REASON)
            node.commit([request.request_id], {"model_sha256": "0" * 64})
            modes = _modes(node.path)
    finally:
        os.umask(previous)
    assert {"ledger.sqlite-wal", "ledger.sqlite-shm", f"receipts/{request.request_id}.json"} <= set(modes)
    assert any(name.startswith("data/train-") for name in modes) and any("holdout-" in name for name in modes)
    folders = {".", "data", "receipts"}
    assert {name: mode for name, mode in modes.items() if name in folders} == dict.fromkeys(folders, 0o700)
    assert {name: mode for name, mode in modes.items() if name not in folders} == {
        name: 0o600 for name in modes if name not in folders}


def test_open_makes_a_world_readable_node_private(node: NodeDirectory) -> None:
    for path in [node.path, *node.path.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # as a node made before the fix was left
    NodeDirectory.open(node.path)
    assert {mode for name, mode in _modes(node.path).items() if (node.path / name).is_dir()} == {0o700}
    assert {mode for name, mode in _modes(node.path).items() if (node.path / name).is_file()} == {0o600}
