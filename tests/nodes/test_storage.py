"""Sample files: private, and durable once write_samples returns (the folder is fsync'd after the rename)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.nodes.storage import read_samples, write_samples


@pytest.fixture
def samples() -> LabeledData:
    return LabeledData(torch.rand(5, 1, 8, 8), torch.arange(5), torch.arange(100, 105))


def test_the_folder_is_fsynced_after_the_rename(tmp_path: Path, samples: LabeledData,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    ref = write_samples(tmp_path / "data", "train", samples)
    assert events == ["fsync file", "replace", "fsync dir"]
    assert torch.equal(read_samples(tmp_path / "data", ref).ids, samples.ids)


def test_sample_files_are_private_whatever_the_umask(tmp_path: Path, samples: LabeledData) -> None:
    previous = os.umask(0o022)
    try:
        ref = write_samples(tmp_path / "data", "train", samples)
    finally:
        os.umask(previous)
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "data" / ref["path"]).stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "data").iterdir()] == [ref["path"]]  # no temporary file left
