"""A fault in the loopback deployment, end to end through the server loop: the SuperLink dies mid-phase.

It is SIGKILLed while the unlearning phase runs and restarted on the same address and state database.
Flower 1.42 cannot resume the run: its SuperExec and the ServerApp each watch their parent's pid and
exit, and the restarted SuperLink only launches pending runs. The run ends ``finished:failed`` (the
ServerApp's heartbeat lapses, or the ServerApp itself reports the failure), the SuperNodes retry until
the SuperLink is back, and the request stays pending: on every node, nothing committed without a
receipt whose audit passed. Requests filed while a federation runs are test_loopback.py's.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL, HEARTBEAT_PATIENCE

from tests.deployment.loopback import (
    REPO,
    UNLEARN_RECEIVED,
    Loopback,
    ManagedProcess,
    consistent_ledgers,
    lean_run_config,
    train_ids,
)

RUN_TIMEOUT = float(os.environ.get("FEDUNLEARN_LOOPBACK_TIMEOUT", "1200"))
# How long the SuperLink trusts a heartbeat, the ServerApp's (then it fails the run) and a SuperNode's (then it
# lists the node offline); Flower 1.42: 2 x 30 s.
HEARTBEAT_TTL = HEARTBEAT_PATIENCE * HEARTBEAT_DEFAULT_INTERVAL
FAIL_TIMEOUT = HEARTBEAT_TTL + 240.0  # slack for a loaded machine


def _outlived(process: ManagedProcess, timeout: float) -> list[int]:
    """The pids of ``process``'s tree still running after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while process.live_tree() and time.monotonic() < deadline:
        time.sleep(0.5)
    return process.live_tree()


@pytest.mark.slow
def test_superlink_killed_mid_phase_fails_the_run_and_commits_nothing(tmp_path: Path) -> None:
    with Loopback(tmp_path / "deploy") as lb:
        node_dirs = lb.init_nodes()
        forget = train_ids(node_dirs[0])[:8]
        superlink = lb.start_superlink()
        supernodes = lb.start_supernodes()
        lb.fedunlearn("node", "forget", "--node-dir", str(node_dirs[0]), "--ids", ",".join(map(str, forget)),
                      "--reason", "fault test: erasure pending when the SuperLink dies")
        (filed,) = lb.ledger(node_dirs[0])

        run_id = lb.run_app(REPO, lean_run_config(tmp_path, rounds=1))
        lb.wait_log(supernodes[0], UNLEARN_RECEIVED, timeout=RUN_TIMEOUT)  # the phase is under way
        lb.kill(superlink)
        killed_at = time.monotonic()
        assert len(superlink.seen) >= 3, f"the SuperLink's tree was {superlink.seen}; expected SuperExec, ServerApp"

        lb.start_superlink()  # same port, same --database, as a supervisor would restart it
        run = lb.wait_run(run_id, timeout=FAIL_TIMEOUT)
        assert run["status"] == "finished:failed", f"run {run_id}: {run}\n{lb.diagnostics(run_id)}"
        assert run["status-details"], run
        # A ServerApp blocked pushing a message when its SuperLink died only sees its SIGINT once a
        # SuperLink answers again (Flower retries without end); by now it must have gone, with its SuperExec.
        assert _outlived(superlink, timeout=HEARTBEAT_TTL + 60) == [], "the dead SuperLink's tree kept running"
        # the SuperNodes outlived the outage and heartbeat to the new SuperLink: once every heartbeat sent
        # before the kill has lapsed, only those sent since can list a node online
        time.sleep(max(0.0, killed_at + HEARTBEAT_TTL + 5 - time.monotonic()))
        lb.wait_online()

        rows = consistent_ledgers(lb)
        assert list(rows) == [filed["request_id"]] and rows[filed["request_id"]]["status"] == "pending", rows
        assert set(forget) <= set(train_ids(node_dirs[0])), "a pending request's samples were purged"
        report = tmp_path / "run" / "report.json"
        assert not report.exists() or json.loads(report.read_text())["status"] == "failed"
    assert lb.live_pids() == [], lb.live_pids()
