"""A node directory: one client's data, its forget-request ledger and its receipts.

Layout::

    node.json            what the node holds (dataset, partition, classes, files + sha256)
    data/train-*.pt      local training samples (x, y, ids)
    data/train-*.index   their ids and labels alone, what a forget request is checked against (index.py)
    data/holdout-*.pt    local hold-out samples: never trained on, the non-members
    ledger.sqlite      forget requests (see ledger.py)
    receipts/*.json    one receipt per committed request

The same code serves a simulated client and a real SuperNode. Commit order is
ledger first (request + receipt in one transaction), then receipt file, then
purge of the raw samples; ``open`` finishes any purge a crash interrupted, so
committed samples never stay on disk and no request is ever shown committed
before its transaction landed. A purge writes the new sample file and its index
before node.json names them; ``open`` also indexes a node made before indexes
existed, under the same exclusive lock.

``NodeDirectory`` is ``NodeRecords`` (records.py: node.json, lock, ledger, index,
``submit``) plus the samples, which need torch.

The directory holds personal data, so it is 0700 and its files 0600 whatever the
umask; ``open`` tightens a node made before that rule (0755/0644) the same way.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from fedunlearn.common.data.partition import parse_partitioner, partition
from fedunlearn.common.data.splits import federation_pool, stratified_pick
from fedunlearn.common.data.tensors import DatasetBundle, LabeledData
from fedunlearn.common.errors import ConfigError, DataError, RequestError
from fedunlearn.common.nodes.index import write_index
from fedunlearn.common.nodes.ledger import ForgetRequest, Ledger, RequestStatus
from fedunlearn.common.nodes.records import FORMAT, TRAIN_INDEX, NodeRecords
from fedunlearn.common.nodes.storage import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    atomic_write_json,
    private_dir,
    read_samples,
    write_samples,
)

__all__ = ["MISLABELED", "NodeDirectory", "NodeLayout", "materialise_node"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeLayout:
    """How a dataset's training split is cut into one node's data (same for every node of a federation)."""

    dataset: str
    partition: int
    num_partitions: int
    partitioner: str = "dirichlet:0.5"
    seed: int = 0
    holdout_fraction: float = 0.2
    train_size: int | None = None
    mislabeled: float = 0.0  # simulations: this share of the node's samples carries a systematically wrong label

    def __post_init__(self) -> None:
        if not 0 <= self.partition < self.num_partitions:
            raise ConfigError(
                f"partition must be in 0..{self.num_partitions - 1} for {self.num_partitions} partitions, "
                f"got {self.partition}"
            )
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        parse_partitioner(self.partitioner)
        if not 0.0 <= self.mislabeled < 1.0:
            raise ConfigError(f"mislabeled must be in [0, 1), got {self.mislabeled}")


MISLABELED = "mislabeled"  # the tag of samples whose label a simulated annotator got wrong


def _mislabel(part: LabeledData, fraction: float, num_classes: int, seed: int) -> tuple[LabeledData, list[int]]:
    """Give ``fraction`` of the samples (stratified) the next class's label, as one confused annotator
    would; returns the data and the ids it mislabeled."""
    pick = stratified_pick(part.y, round(fraction * len(part)), torch.Generator().manual_seed(seed))
    y = part.y.clone()
    y[pick] = (y[pick] + 1) % num_classes
    return part.with_labels(y), sorted(int(i) for i in part.ids[pick])


def _node_part(bundle: DatasetBundle, layout: NodeLayout) -> tuple[LabeledData, LabeledData]:
    """This node's (train, hold-out): a seeded subset of the official train split, partitioned."""
    pool, _ = federation_pool(bundle.train, layout.train_size, layout.seed)
    parts = partition(pool.y, layout.num_partitions, parse_partitioner(layout.partitioner), seed=layout.seed)
    mine = pool.subset(parts[layout.partition])
    holdout_size = max(1, round(layout.holdout_fraction * len(mine)))
    if holdout_size >= len(mine):
        raise DataError(
            f"partition {layout.partition} has only {len(mine)} samples, too few to keep a hold-out; "
            "use fewer partitions"
        )
    generator = torch.Generator().manual_seed(layout.seed + 1 + layout.partition)
    in_holdout = torch.zeros(len(mine), dtype=torch.bool)
    in_holdout[stratified_pick(mine.y, holdout_size, generator)] = True
    return mine.subset(~in_holdout), mine.subset(in_holdout)


def _index_of(data_dir: Path, train: LabeledData) -> dict[str, str]:
    return write_index(data_dir, "train", train.ids.tolist(), train.y.tolist())


def _train_files(data_dir: Path, train: LabeledData) -> dict[str, dict[str, str]]:
    """Write the training samples and their index; node.json is to name them only afterwards."""
    return {"train": write_samples(data_dir, "train", train), TRAIN_INDEX: _index_of(data_dir, train)}


def materialise_node(path: Path, bundle: DatasetBundle, layout: NodeLayout) -> NodeDirectory:
    """Create a node directory; refuses to overwrite an existing one (its ledger matters)."""
    path = Path(path)
    if (path / "node.json").exists() or (path / "ledger.sqlite").exists():
        raise ConfigError(f"{path} already holds a node; pick an empty directory")
    train, holdout = _node_part(bundle, layout)
    tags: dict[str, list[int]] = {}
    if layout.mislabeled > 0:
        seed = layout.seed * 7 + layout.partition
        train, wrong_train = _mislabel(train, layout.mislabeled, bundle.num_classes, seed)
        holdout, wrong_holdout = _mislabel(holdout, layout.mislabeled, bundle.num_classes, seed + 1)
        tags[MISLABELED] = wrong_train + wrong_holdout
    private_dir(path)
    private_dir(path / "receipts")
    data_dir = path / "data"
    files = {**_train_files(data_dir, train), "holdout": write_samples(data_dir, "holdout", holdout)}
    Ledger(path / "ledger.sqlite")
    atomic_write_json(path / "node.json", {
        "format": FORMAT,
        "layout": {k: getattr(layout, k) for k in layout.__dataclass_fields__},
        "num_classes": bundle.num_classes,
        "class_names": list(bundle.class_names),
        "input_shape": list(bundle.input_shape),
        "files": files,
        "tags": tags,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    return NodeDirectory.open(path)


class NodeDirectory(NodeRecords):
    """An opened node directory. Cheap to open; data is read from disk on each call."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        super().__init__(path, meta)
        self.layout = NodeLayout(**meta["layout"])

    def _prepare(self) -> None:
        """The repairs, under the exclusive lock; then the index is hash-checked, so a damaged one fails
        the open, and kept for the first request."""
        with self._exclusive():
            self._make_private()
            self._refresh()
            self._finish_purges()
            self._index_if_missing()
            self._drop_orphans()
        self.index()

    def _make_private(self) -> None:
        """Tighten a node written with the umask's modes: 0700 folders, 0600 files (symlinks left alone)."""
        if not self.path.stat().st_mode & 0o077:
            return
        try:
            for folder in (self.path, self.path / "data", self.path / "receipts"):
                if not folder.is_dir():
                    continue
                folder.chmod(PRIVATE_DIR_MODE)
                for file in folder.iterdir():
                    if file.is_file() and not file.is_symlink():
                        file.chmod(PRIVATE_FILE_MODE)
        except PermissionError as err:  # another user's node, opened to read: say so, do not fail
            log.warning("%s is readable by other users and cannot be made private here (%s); "
                        "its owner should run: chmod -R go= %s", self.path, err, self.path)
            return
        log.warning("%s was readable by other users; made its folders 0700 and its files 0600", self.path)

    def train(self) -> LabeledData:
        """Every training sample still on disk (including those under pending requests)."""
        return self._read("train")

    def holdout(self) -> LabeledData:
        return self._read("holdout")

    def _read(self, part: str) -> LabeledData:
        with self._exclusive(fcntl.LOCK_SH):
            self._refresh()
            return read_samples(self.path / "data", self.meta["files"][part])

    def retain(self) -> LabeledData:
        """Training samples no request holds: the only ones any training step may use."""
        held = torch.tensor(sorted(self.ledger.held_ids()), dtype=torch.int64)
        return self.train().where_ids(held, keep=False)

    def forget_set(self, requests: Sequence[ForgetRequest]) -> LabeledData:
        ids = torch.tensor(sorted({i for r in requests for i in r.sample_ids}), dtype=torch.int64)
        return self.train().where_ids(ids, keep=True)

    def commit(self, request_ids: Sequence[str], receipt_fields: Mapping[str, Any]) -> list[Path]:
        """Mark pending requests committed with their receipts, write the receipt files, purge the data."""
        if not request_ids:
            raise RequestError("commit names no requests")
        when = datetime.now(UTC).isoformat(timespec="seconds")
        receipts = {}
        for request_id in request_ids:
            request = self.ledger.get(request_id)
            receipts[request_id] = {
                **dict(receipt_fields), "request_id": request_id, "kind": request.kind,
                "num_samples": len(request.sample_ids), "committed_at": when,
            }
        with self._exclusive():
            self.ledger.commit(receipts)
            self._refresh()
            self._finish_purges()
        return [self.receipt_path(r) for r in request_ids]

    def _drop_orphans(self) -> None:
        """Remove data files a crash left unreferenced (a write that never reached node.json)."""
        referenced = {ref["path"] for ref in self.meta["files"].values()}
        for stale in (self.path / "data").glob("*"):
            if stale.name not in referenced:
                stale.unlink(missing_ok=True)

    def receipt_path(self, request_id: str) -> Path:
        return self.path / "receipts" / f"{request_id}.json"

    def _finish_purges(self) -> None:
        """Write missing receipt files and drop committed samples still on disk (idempotent)."""
        committed = self.ledger.list(RequestStatus.COMMITTED)
        for request in committed:
            if not self.receipt_path(request.request_id).exists():
                private_dir(self.path / "receipts")
                atomic_write_json(self.receipt_path(request.request_id), request.receipt)
        gone = torch.tensor(sorted({i for r in committed for i in r.sample_ids}), dtype=torch.int64)
        train = read_samples(self.path / "data", self.meta["files"]["train"])
        if not bool(torch.isin(train.ids, gone).any()):
            return
        self._point_to(_train_files(self.path / "data", train.where_ids(gone, keep=False)))
        log.info("purged %d committed sample(s) from %s", int(torch.isin(train.ids, gone).sum()), self.path)

    def _index_if_missing(self) -> None:
        """Index the training samples of a node made before indexes existed (once: node.json then names it)."""
        if TRAIN_INDEX in self.meta["files"]:
            return
        train = read_samples(self.path / "data", self.meta["files"]["train"])
        self._point_to({TRAIN_INDEX: _index_of(self.path / "data", train)})
        log.info("indexed the %d training sample(s) of %s (a node made before sample indexes)", len(train),
                 self.path)

    def _point_to(self, written: Mapping[str, dict[str, str]]) -> None:
        """Make node.json name ``written`` (files already on disk), then delete the files it no longer names."""
        before = {ref["path"] for ref in self.meta["files"].values()}
        meta = {**self.meta, "files": {**self.meta["files"], **written}}
        atomic_write_json(self.path / "node.json", meta)
        self.meta = meta
        for name in before - {ref["path"] for ref in meta["files"].values()}:
            (self.path / "data" / name).unlink(missing_ok=True)
