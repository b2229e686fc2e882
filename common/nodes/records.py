"""A node directory's records, without its samples: node.json, its lock, the ledger and the sample index.

Filing a forget request needs only these: the request is checked against the
sample index (``index.py``), never the torch sample file, so ``fedunlearn node
forget`` starts without torch and a gRPC ``Submit`` reads no pixels.
``NodeDirectory`` (directory.py) adds the samples, purges and repairs.

The parsed index is kept on the object, keyed by the file node.json names: a
purge writes a new index under a new name, so a stale one is never used, and a
long-lived object (the request server's) hash-checks each index file once.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from fedunlearn.common.errors import DataError, RequestError
from fedunlearn.common.nodes.index import SampleIndex, read_index
from fedunlearn.common.nodes.ledger import ForgetRequest, Ledger, RequestKind
from fedunlearn.common.nodes.storage import PRIVATE_FILE_MODE, read_json
from fedunlearn.common.nodes.text import checked_reason

__all__ = ["FORMAT", "TRAIN_INDEX", "NodeRecords"]

FORMAT = 1
TRAIN_INDEX = "train_index"  # node.json's ``files`` entry for the training samples' index


class NodeRecords:
    """An opened node directory's records. Cheap to open; node.json and the ledger are re-read on each call."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.ledger = Ledger(path / "ledger.sqlite")
        self._index: tuple[tuple[str, str], SampleIndex] | None = None  # ((file, sha256), parsed)

    @classmethod
    def open(cls, path: Path | str) -> Self:
        path = Path(path)
        if not (path / "node.json").is_file():
            raise DataError(f"{path} is not a node directory (no node.json); create one with `fedunlearn node init`")
        meta = read_json(path / "node.json")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{path / 'node.json'} has an unknown format; re-create the node with this version")
        node = cls(path, meta)
        node._prepare()
        return node

    def _prepare(self) -> None:
        """A node made before sample indexes existed is indexed once, by the full directory (it reads the
        samples, so this one time needs torch)."""
        if TRAIN_INDEX not in self.meta["files"]:
            from fedunlearn.common.nodes.directory import NodeDirectory

            NodeDirectory.open(self.path)
            self._refresh()

    @contextmanager
    def _exclusive(self, mode: int = fcntl.LOCK_EX) -> Iterator[None]:
        """Writers (purge, repair) hold the node's flock exclusively; readers share it, so a
        reader never sees a data file disappear between reading node.json and the file."""
        fd = os.open(self.path / ".lock", os.O_CREAT | os.O_WRONLY | os.O_APPEND, PRIVATE_FILE_MODE)
        try:
            fcntl.flock(fd, mode)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _refresh(self) -> None:
        """Re-read node.json: another process may have purged since this object was made."""
        self.meta = read_json(self.path / "node.json")

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    def tagged(self, tag: str) -> set[int]:
        """Ids of the samples (training and hold-out) carrying ``tag``, e.g. ``MISLABELED``."""
        return {int(i) for i in self.meta.get("tags", {}).get(tag, [])}

    def tags_of(self, ids: Sequence[int]) -> list[str]:
        """The tags every one of ``ids`` carries (a forget set made of one kind of sample)."""
        wanted = set(ids)
        return sorted(tag for tag, members in self.meta.get("tags", {}).items() if wanted and wanted <= set(members))

    def index(self) -> SampleIndex:
        """The index of the training samples node.json names now; read and hash-checked once per file."""
        with self._exclusive(fcntl.LOCK_SH):
            self._refresh()
            ref = self.meta["files"].get(TRAIN_INDEX)
            if ref is None:  # an older fedunlearn rewrote node.json since this object was opened
                raise DataError(f"{self.path / 'node.json'} names no sample index; open the node again with this "
                                "version (e.g. `fedunlearn node forget`), which builds it")
            key = (ref["path"], ref["sha256"])
            cached = self._index
            if cached is None or cached[0] != key:
                cached = (key, read_index(self.path / "data", ref))
                self._index = cached
            return cached[1]

    def submit(
        self, *, ids: Sequence[int] | None = None, target_class: int | None = None, everything: bool = False,
        reason: str,
    ) -> ForgetRequest:
        """File a request for explicit ids, a whole class, or all of this node's data (leaving)."""
        if sum((ids is not None, target_class is not None, everything)) != 1:
            raise RequestError("give exactly one of: sample ids, a class, or everything")
        reason = checked_reason(reason)  # before reading the index: a bad reason is refused at once
        index = self.index()
        kind: RequestKind
        if ids is not None:
            kind, chosen = "ids", self._known_ids(index, ids)
        elif target_class is not None:
            kind, chosen = "class", self._class_ids(index, target_class)
        else:
            held = self.ledger.held_ids()
            kind, chosen = "all", [i for i in index.ids if i not in held]
            if not chosen:
                raise RequestError("every sample of this node is already under a request")
        return self.ledger.submit(kind, chosen, reason=reason, target_class=target_class)

    @staticmethod
    def _known_ids(index: SampleIndex, ids: Sequence[int]) -> list[int]:
        if not ids:
            raise RequestError("the request names no sample ids; nothing was recorded")
        unknown = index.absent(ids)
        if unknown:
            shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
            raise RequestError(
                f"{len(unknown)} id(s) are not training samples of this node: {shown}; "
                "they belong to another node, were already purged, or do not exist. Nothing was recorded"
            )
        return list(ids)

    def _class_ids(self, index: SampleIndex, target_class: int) -> list[int]:
        if not 0 <= target_class < self.num_classes:
            raise RequestError(f"class must be in 0..{self.num_classes - 1}, got {target_class}")
        of_class = index.of_class(target_class)
        if not of_class:
            raise RequestError(f"this node holds no training sample of class {target_class}; nothing was recorded")
        held = self.ledger.held_ids()
        return [i for i in of_class if i not in held] or of_class  # all held: let the ledger name the owner
