"""The docker-compose topology, run as local processes: a real deployment end to end, without Docker.

One SuperLink and three SuperNodes with TLS (certificates from scripts/make-certs.sh), node
directories made by `fedunlearn node init`, and the app run with `flwr run` (two rounds, no
baselines: ``lean_run_config``). Round 1 finds nothing pending and trains; while it trains, requests
arrive the ways a deployment files them: through the CLI on node 1, as an operator with shell access
would, through node 2's gRPC endpoint, as a DSAR portal would, and fifteen more from three threads
through node 1's endpoint. Round 2's unlearning phase takes those; fifteen filed while it unlearns
come too late for its status snapshot and stay pending. Then: the run finished (its status, not
`flwr run`'s exit code), the report's gate passed, every acknowledged request is in its ledger once,
each committed one has a receipt whose audit passed and its samples are gone, and every process stopped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from tests.deployment import topology as T
from tests.deployment.loopback import (
    REPO,
    TRAIN_RECEIVED,
    UNLEARN_RECEIVED,
    Loopback,
    ManagedProcess,
    consistent_ledgers,
    lean_run_config,
    stop_process,
    train_ids,
)

RUN_TIMEOUT = float(os.environ.get("FEDUNLEARN_LOOPBACK_TIMEOUT", "1200"))
FORGET_PER_NODE = 8  # the CLI's request on node 1 and the gRPC one on node 2
FILERS, WAVE = 3, 15  # threads, and single-sample requests filed in each of two waves on node 1


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
                    reply = client.submit(ids=[sample], reason="loopback test: filed while the federation runs")
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
def test_compose_topology_on_loopback(tmp_path: Path) -> None:
    from fedunlearn.client.request_service import RequestClient

    with Loopback(tmp_path / "deploy") as lb:
        node_dirs = lb.init_nodes()
        node_1_ids = train_ids(node_dirs[0])
        forget = {1: node_1_ids[:FORGET_PER_NODE], 2: train_ids(node_dirs[1])[:FORGET_PER_NODE]}
        wave_ids = node_1_ids[FORGET_PER_NODE:FORGET_PER_NODE + 2 * WAVE]

        lb.start_superlink()
        supernodes = lb.start_supernodes()
        lb.start_request_services()
        run_id = lb.run_app(REPO, lean_run_config(tmp_path, rounds=2))

        # round 1 found nothing pending and trains: what is filed now reaches round 2's status snapshot
        lb.wait_log(supernodes[0], TRAIN_RECEIVED, timeout=RUN_TIMEOUT)
        out = lb.fedunlearn("node", "forget", "--node-dir", str(node_dirs[0]), "--ids", ",".join(map(str, forget[1])),
                            "--reason", "loopback test: erasure filed on the node")
        (cli_request,) = [r["request_id"] for r in lb.ledger(node_dirs[0])]
        assert str(cli_request) in out
        with RequestClient(f"localhost:{lb.request_port(2)}", token=lb.request_token,
                           root_cert=lb.ca_cert.read_bytes()) as client:
            grpc_request = client.submit(ids=forget[2], reason="loopback test: erasure filed over gRPC")
        assert grpc_request["status"] == "pending"
        before = _file_concurrently(lb, 1, wave_ids[:WAVE])
        # round 2's phase has taken its snapshot and is unlearning: these come too late for it
        lb.wait_log(supernodes[0], UNLEARN_RECEIVED, timeout=RUN_TIMEOUT)
        during = _file_concurrently(lb, 1, wave_ids[WAVE:])

        run = lb.wait_run(run_id, timeout=RUN_TIMEOUT)
        assert run["status"] == "finished:completed", (
            f"run {run_id}: {run['status']} ({run['status-details']})\n{lb.diagnostics(run_id)}")
        listed = Counter(r["request_id"] for r in lb.ledger(node_dirs[0]))
        rows = consistent_ledgers(lb)
        spawned = sorted({pid for p in lb.processes for pid in p.seen})
    # every process stopped, the ones Flower spawned included
    assert lb.live_pids() == [], lb.live_pids()
    assert all(p.popen.returncode is not None for p in lb.processes)
    assert len(spawned) > len(lb.processes)  # the SuperExecs were seen, and are gone too

    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["unlearning"]["gate"]["passed"] is True, report["unlearning"]
    served = {r["request_id"]: r["status"] for r in report["requests"]}
    filed_on_node_1 = {cli_request, *before, *during}
    assert set(listed) == filed_on_node_1 and set(listed.values()) == {1}, listed  # each acknowledged one, once
    assert {request_id for request_id, row in rows.items() if row["node"] == 2} == {grpc_request["request_id"]}
    assert set(served) <= {cli_request, grpc_request["request_id"], *before}, (
        f"the phase took requests filed after its snapshot: {set(served) & set(during)}")

    for i, request_id in ((1, cli_request), (2, grpc_request["request_id"])):
        assert rows[request_id]["status"] == served[request_id] == "committed", (rows[request_id], served)
        left = set(train_ids(node_dirs[i - 1]))
        assert not left & set(forget[i]), f"node {i} still holds forgotten samples {sorted(left & set(forget[i]))}"
        assert left, f"node {i} lost all its data"
    left = set(train_ids(node_dirs[0]))
    for request_id, sample in (before | during).items():
        # committed only by the phase that named it (with a passing audit, checked above); every other
        # request is pending and its sample still on disk, out of training until it is decided
        status = rows[request_id]["status"]
        assert status == served.get(request_id, "pending"), (request_id, status, served.get(request_id))
        assert (sample in left) == (status == "pending"), (request_id, sample, status)
    # node 3 filed nothing and kept everything
    assert lb.ledger(node_dirs[2]) == []


def test_stop_process_kills_a_tree_that_ignores_sigterm(tmp_path: Path) -> None:
    """The harness's stop: SIGTERM, grace, then SIGKILL, for the leader and a child in its own session."""
    log = tmp_path / "tree.log"
    script = "trap '' TERM; setsid sleep 300 & sleep 300 & echo started; wait"
    with log.open("wb") as out:
        popen = subprocess.Popen(["sh", "-c", script], stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    process = ManagedProcess("tree", ["sh"], popen, log)
    for _ in range(50):
        process.snapshot_tree()
        if len(process.seen) >= 3 and "started" in log.read_text():
            break
        time.sleep(0.1)
    assert len(process.seen) >= 3, process.seen
    stop_process(process, grace=1.0)
    assert process.live_tree() == []
    assert popen.returncode is not None


def test_harness_renders_the_topology(tmp_path: Path) -> None:
    """The loopback command lines are topology.py's templates; nothing is started here."""
    lb = Loopback(tmp_path, certs_dir=tmp_path / "certs")
    link = lb.argv("superlink")
    assert link[0] == "flower-superlink" and "--insecure" not in link
    assert link[link.index("--port") + 1] == str(lb.placement.superlink_port)
    config = tomllib.loads((lb.cli_home / "config.toml").read_text())
    connection = config["superlink"][config["superlink"]["default"]]
    assert connection == {"address": f"127.0.0.1:{lb.placement.superlink_port}",
                          "root-certificates": str((tmp_path / "certs" / "ca.crt").resolve())}
    ports = {lb.placement.superlink_port, *lb.placement.runtime_ports.values(), *lb.placement.request_ports.values()}
    assert len(ports) == 1 + 2 * T.NUM_NODES
    for i in range(1, T.NUM_NODES + 1):
        node = lb.argv(f"supernode-{i}")
        assert T.node_config(node) == {"node-dir": str(tmp_path / f"node-{i}")}
        assert re.fullmatch(r"127\.0\.0\.1:\d+", node[node.index("--superlink") + 1])
