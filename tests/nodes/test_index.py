"""Sample index files: what they answer, and that a damaged one is a DataError naming the file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fedunlearn.common.errors import DataError
from fedunlearn.common.nodes.index import MAGIC, read_index, write_index


def test_an_index_is_sorted_by_id_and_answers_membership_and_classes(tmp_path: Path) -> None:
    ref = write_index(tmp_path, "train", [30, 10, 20, 40], [1, 0, 1, 2])
    assert ref["path"] == f"train-{ref['sha256'][:12]}.index"
    index = read_index(tmp_path, ref)
    assert (list(index.ids), list(index.labels), len(index)) == ([10, 20, 30, 40], [0, 1, 1, 2], 4)
    assert index.absent([40, 5, 10, 99, 5]) == [5, 99]
    assert (index.of_class(1), index.of_class(7)) == ([20, 30], [])
    assert write_index(tmp_path, "train", [40, 30, 20, 10], [2, 1, 1, 0]) == ref  # same samples, same file


def test_an_index_refuses_repeated_ids(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="repeat an id"):
        write_index(tmp_path, "train", [1, 1], [0, 0])


def test_a_missing_or_altered_index_is_a_data_error(tmp_path: Path) -> None:
    ref = write_index(tmp_path, "train", [1, 2, 3], [0, 1, 0])
    path = tmp_path / ref["path"]
    payload = bytearray(path.read_bytes())
    payload[-1] ^= 0xFF
    path.write_bytes(bytes(payload))
    with pytest.raises(DataError, match="does not match its recorded sha256"):
        read_index(tmp_path, ref)
    path.unlink()
    with pytest.raises(DataError, match="is missing"):
        read_index(tmp_path, ref)


@pytest.mark.parametrize("payload", [b"", b"not an index at all", MAGIC + (5).to_bytes(8, "little") + b"\0" * 16])
def test_a_file_that_matches_its_hash_but_is_no_index_is_a_data_error(tmp_path: Path, payload: bytes) -> None:
    (tmp_path / "train-x.index").write_bytes(payload)
    ref = {"path": "train-x.index", "sha256": hashlib.sha256(payload).hexdigest()}
    with pytest.raises(DataError, match="cannot be read as a sample index"):
        read_index(tmp_path, ref)
