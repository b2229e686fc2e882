"""scripts/test.sh leans on pytest-xdist's ``--dist loadgroup``: each costly session fixture is built once
because its tests share a group (tests/conftest.py). Nothing fails when grouping stops working, the run only
gets slower, as it did under pytest 9.2; so run a small grouped suite on two workers and look."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GROUPED_SUITE = '''
import os
from pathlib import Path

import pytest

OUT = Path(__file__).parent / "workers"


@pytest.mark.parametrize("k", range(4))
@pytest.mark.xdist_group("together")
def test_grouped(k):
    (OUT / f"grouped-{k}").write_text(os.environ["PYTEST_XDIST_WORKER"])


@pytest.mark.parametrize("k", range(4))
def test_free(k):
    (OUT / f"free-{k}").write_text(os.environ["PYTEST_XDIST_WORKER"])
'''


def test_a_group_runs_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_grouped_suite.py").write_text(GROUPED_SUITE)
    (tmp_path / "workers").mkdir()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                           "--dist", "loadgroup", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    workers = {path.name: path.read_text() for path in (tmp_path / "workers").iterdir()}
    assert len(workers) == 8, workers
    assert len({workers[f"grouped-{k}"] for k in range(4)}) == 1, workers
