"""Faults in the loopback deployment, end to end through the server loop (the security issue's list).

* The SuperLink is SIGKILLed while the unlearning phase runs and restarted on the same address and
  state database. Flower 1.42 cannot resume the run: its SuperExec and the ServerApp each watch their
  parent's pid and exit, and the restarted SuperLink only launches pending runs. The run ends
  ``finished:failed`` (the ServerApp's heartbeat lapses, or the ServerApp itself reports the failure),
  the SuperNodes retry until the SuperLink is back, and the request stays pending.
* Thirty requests are filed from three threads through node 1's gRPC endpoint: fifteen while round 1
  trains, fifteen while round 2's unlearning phase runs. Every acknowledged request is in the ledger
  once; the phase decides only those its status snapshot saw, the later ones stay pending.

Either way, on every node: nothing committed without a receipt whose audit passed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL, HEARTBEAT_PATIENCE

from tests.deployment import topology as T
from tests.deployment.loopback import REPO, Loopback, ManagedProcess, lean_run_config, train_ids

RUN_TIMEOUT = float(os.environ.get("FEDUNLEARN_LOOPBACK_TIMEOUT", "1200"))
# How long the SuperLink trusts a heartbeat, the ServerApp's (then it fails the run) and a SuperNode's (then it
# lists the node offline); Flower 1.42: 2 x 30 s.
HEARTBEAT_TTL = HEARTBEAT_PATIENCE * HEARTBEAT_DEFAULT_INTERVAL
FAIL_TIMEOUT = HEARTBEAT_TTL + 240.0  # slack for a loaded machine
UNLEARN_RECEIVED = r"Receiving: train\.unlearn message"
TRAIN_RECEIVED = r"Receiving: train message"
FILERS, WAVE = 3, 15  # threads, and requests filed in each of two waves


def _consistent_ledgers(lb: Loopback) -> dict[str, dict[str, Any]]:
    """Every node's requests by id, after checking that each committed one has a receipt whose audit
    passed (in the ledger and in its receipt file) and each pending one has none."""
    rows: dict[str, dict[str, Any]] = {}
    for i in range(1, T.NUM_NODES + 1):
        node_dir = lb.node_dir(i)
        for row in lb.ledger(node_dir):
            request_id, receipt = row["request_id"], row["receipt"]
            receipt_file = node_dir / "receipts" / f"{request_id}.json"
            if row["status"] == "committed":
                assert isinstance(receipt, dict) and receipt["audit"].get("passed") is True, (
                    f"node {i}: {request_id} committed without a passing audit: {receipt}")
                assert json.loads(receipt_file.read_text()) == receipt, f"node {i}: {request_id}'s receipt file"
            else:
                assert row["status"] == "pending", f"node {i}: {row}"  # nobody rejects here
                assert receipt is None and not receipt_file.exists(), f"node {i}: pending {request_id} has a receipt"
            rows[request_id] = {**row, "node": i}
    return rows


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

        run_id = lb.run_app(REPO, lean_run_config(tmp_path, rounds=1, int8=False))
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

        rows = _consistent_ledgers(lb)
        assert list(rows) == [filed["request_id"]] and rows[filed["request_id"]]["status"] == "pending", rows
        assert set(forget) <= set(train_ids(node_dirs[0])), "a pending request's samples were purged"
        report = tmp_path / "run" / "report.json"
        assert not report.exists() or json.loads(report.read_text())["status"] == "failed"
    assert lb.live_pids() == [], lb.live_pids()


def _file_concurrently(lb: Loopback, node: int, ids: list[int]) -> dict[str, int]:
    """One request per id, filed from FILERS threads, each with its own client; request id -> sample id."""
    from fedunlearn.client.request_service import RequestClient

    acknowledged: dict[str, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(FILERS)

    def filer(mine: list[int]) -> None:
        with RequestClient(f"localhost:{lb.request_port(node)}", token=lb.request_token,
                           root_cert=lb.ca_cert.read_bytes()) as client:
            start.wait()
            for sample in mine:
                try:
                    reply = client.submit(ids=[sample], reason="fault test: filed while the federation runs")
                except Exception as err:  # every refusal or transport failure is a finding
                    with lock:
                        errors.append(f"{sample}: {err!r}")
                    continue
                with lock:
                    acknowledged[reply["request_id"]] = sample

    threads = [threading.Thread(target=filer, args=(ids[k::FILERS],)) for k in range(FILERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(acknowledged) == len(ids), errors
    return acknowledged


@pytest.mark.slow
def test_requests_filed_over_grpc_while_the_federation_runs(tmp_path: Path) -> None:
    with Loopback(tmp_path / "deploy") as lb:
        node_dirs = lb.init_nodes()
        ids = train_ids(node_dirs[0])[:2 * WAVE]
        lb.start_superlink()
        supernodes = lb.start_supernodes()
        lb.start_request_services([1])

        run_id = lb.run_app(REPO, lean_run_config(tmp_path, rounds=2, int8=False))
        # round 1 found nothing pending and trains: these reach round 2's status snapshot
        lb.wait_log(supernodes[0], TRAIN_RECEIVED, timeout=RUN_TIMEOUT)
        before = _file_concurrently(lb, 1, ids[:WAVE])
        # round 2's phase has taken its snapshot and is unlearning: these come too late for it
        lb.wait_log(supernodes[0], UNLEARN_RECEIVED, timeout=RUN_TIMEOUT)
        during = _file_concurrently(lb, 1, ids[WAVE:])

        run = lb.wait_run(run_id, timeout=RUN_TIMEOUT)
        assert run["status"] == "finished:completed", (
            f"run {run_id}: {run['status']} ({run['status-details']})\n{lb.diagnostics(run_id)}")
        listed = Counter(r["request_id"] for r in lb.ledger(node_dirs[0]))
        rows = _consistent_ledgers(lb)
    assert lb.live_pids() == [], lb.live_pids()

    filed = before | during
    assert set(listed) == set(filed) and set(listed.values()) == {1}, listed  # each acknowledged one, once
    assert {row["node"] for row in rows.values()} == {1}
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    served = {r["request_id"]: r["status"] for r in report["requests"]}
    assert set(served) <= set(before), f"the phase took requests filed after its snapshot: {set(served) - set(before)}"
    left = set(train_ids(node_dirs[0]))
    for request_id, sample in filed.items():
        # committed only by the phase that named it (with a passing audit, checked above); every other
        # request is pending and its sample still on disk, out of training until it is decided
        status = rows[request_id]["status"]
        assert status == served.get(request_id, "pending"), (request_id, status, served.get(request_id))
        assert (sample in left) == (status == "pending"), (request_id, sample, status)
