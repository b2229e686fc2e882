"""How a simulation grows with the number of virtual clients: wall time and peak memory.

Each size runs ``fedunlearn simulate`` in its own process (Ray and its workers
are that process's children), while this process samples the resident memory
of the whole process tree from /proc (Linux). The total training data stays
the same at every size, so the growth shown is the cost of more clients, not
of more data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedunlearn.common.errors import ConfigError, FedUnlearnError
from fedunlearn.common.nodes.storage import atomic_write_json

__all__ = ["ScalingPoint", "measure_scaling", "tree_rss_bytes"]


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == pid:
            kids.append(int(entry.name))
    return kids


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, in bytes."""
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _rss(pid)
        stack.extend(_children(pid))
    return total


@dataclass(frozen=True)
class ScalingPoint:
    clients: int
    rounds: int
    wall_seconds: float
    peak_rss_mb: float
    training_seconds: float
    unlearning_seconds: float | None
    status: str


def _run_one(scenario: Path, clients: int, rounds: int, out: Path, interval: float) -> ScalingPoint:
    run_dir = out / f"clients-{clients}"
    command = [sys.executable, "-c", "from fedunlearn.simulations.cli import main; main()", "simulate", str(scenario),
               "--clients", str(clients), "--rounds", str(rounds), "--out", str(run_dir)]
    log = (out / f"clients-{clients}.log").open("w")
    started, peak = time.perf_counter(), 0
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    while process.poll() is None:
        peak = max(peak, tree_rss_bytes(process.pid))
        time.sleep(interval)
    wall = time.perf_counter() - started
    log.close()
    report_path = run_dir / "report.json"
    report: dict[str, Any] = (json.loads(report_path.read_text()) if report_path.exists()
                              else {"status": "no report"})
    unlearning = report.get("unlearning") or {}
    return ScalingPoint(clients=clients, rounds=rounds, wall_seconds=wall, peak_rss_mb=peak / 2**20,
                        training_seconds=float(report.get("training", {}).get("seconds", 0.0)),
                        unlearning_seconds=unlearning.get("seconds"), status=str(report.get("status")))


def measure_scaling(scenario: Path, client_counts: list[int], *, rounds: int, out: Path,
                    interval: float = 0.5) -> list[ScalingPoint]:
    if not Path("/proc/self/status").exists():
        raise ConfigError("the scaling benchmark reads memory from /proc and needs Linux")
    out.mkdir(parents=True, exist_ok=True)
    points = [_run_one(scenario, n, rounds, out, interval) for n in client_counts]
    atomic_write_json(out / "scaling.json", {"scenario": str(scenario), "points": [asdict(p) for p in points]})
    lines = ["| clients | rounds | wall s | peak RSS MB | training s | unlearning s | status |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {p.clients} | {p.rounds} | {p.wall_seconds:.1f} | {p.peak_rss_mb:.0f} | {p.training_seconds:.1f} | "
              f"{'-' if p.unlearning_seconds is None else f'{p.unlearning_seconds:.1f}'} | {p.status} |"
              for p in points]
    (out / "scaling.md").write_text("\n".join(lines) + "\n")
    failed = [p.clients for p in points if p.status != "completed"]
    if failed:
        raise FedUnlearnError(f"the runs with {failed} clients did not complete; see their logs in {out}")
    return points
