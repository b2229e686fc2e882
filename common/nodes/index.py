"""The training samples' ids and labels without their pixels: what filing a forget request checks against.

A request names sample ids (or a class, or everything); checking it needs only
which ids the node holds and their labels. Reading them from the torch sample
file meant loading torch and re-hashing every pixel on each request, so the node
keeps this index beside the sample file it was made from: written with it, named
by its own sha256 and recorded in ``node.json`` like it, so it is replaced, never
changed in place.

Format (little-endian): the 8-byte magic ``MAGIC``, the count n as uint64, n int64
ids in ascending order, then their n int64 labels. Plain ``array``: no torch, no numpy.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fedunlearn.common.errors import DataError
from fedunlearn.common.nodes.storage import read_addressed, write_addressed

__all__ = ["MAGIC", "SampleIndex", "read_index", "write_index"]

MAGIC = b"FUIDX\x00v1"
_COUNT = struct.Struct("<Q")


@dataclass(frozen=True)
class SampleIndex:
    """Training sample ids, ascending, and their labels: ``ids[i]`` has label ``labels[i]`` (both length n).

    Shared by every call that reads the same file: treat the arrays as read-only.
    """

    ids: array[int]
    labels: array[int]

    def __len__(self) -> int:
        return len(self.ids)

    def absent(self, wanted: Iterable[int]) -> list[int]:
        """The ``wanted`` ids this index lacks, ascending (a binary search each: no set of all ids)."""
        return sorted({i for i in wanted if not self._has(i)})

    def _has(self, sample_id: int) -> bool:
        at = bisect_left(self.ids, sample_id)
        return at < len(self.ids) and self.ids[at] == sample_id

    def of_class(self, label: int) -> list[int]:
        return [i for i, y in zip(self.ids, self.labels, strict=True) if y == label]


def _little_endian(values: array[int]) -> bytes:
    if sys.byteorder == "big":
        values = array("q", values)
        values.byteswap()
    return values.tobytes()


def write_index(directory: Path, stem: str, ids: Iterable[int], labels: Iterable[int]) -> dict[str, str]:
    """Save ``<stem>-<sha12>.index`` (0600, in a 0700 folder); returns the reference for node.json."""
    pairs = sorted(zip(ids, labels, strict=True))
    if len({i for i, _ in pairs}) != len(pairs):
        raise DataError(f"the {stem} samples repeat an id; a sample index needs each id once")
    payload = b"".join((MAGIC, _COUNT.pack(len(pairs)), _little_endian(array("q", (i for i, _ in pairs))),
                        _little_endian(array("q", (y for _, y in pairs)))))
    return write_addressed(directory, stem, ".index", payload)


def read_index(directory: Path, ref: dict[str, str]) -> SampleIndex:
    """Load a referenced index after checking its hash (the bytes read once, hashed and parsed)."""
    path, payload = directory / ref["path"], read_addressed(directory, ref)
    header = len(MAGIC) + _COUNT.size
    count = _COUNT.unpack_from(payload, len(MAGIC))[0] if len(payload) >= header else -1
    if not payload.startswith(MAGIC) or len(payload) != header + 16 * count:
        raise DataError(f"{path} cannot be read as a sample index (bad header or length)")
    values = array("q", payload[header:])
    if sys.byteorder == "big":
        values.byteswap()
    return SampleIndex(values[:count], values[count:])
