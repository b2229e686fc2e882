"""The docker-compose topology, run as local processes: a real deployment end to end, without Docker.

One SuperLink and three SuperNodes with TLS (certificates from scripts/make-certs.sh),
node directories made by `fedunlearn node init`, a forget request filed through the
CLI on node 1 and one through node 2's gRPC endpoint, the app run with `flwr run` (one round,
no baselines: ``lean_run_config``), and then: the run finished (its status, not `flwr run`'s exit code), the report's
gate passed, both ledgers say `committed`, and the forgotten samples are gone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from tests.deployment import topology as T
from tests.deployment.loopback import REPO, Loopback, ManagedProcess, lean_run_config, stop_process, train_ids

RUN_TIMEOUT = float(os.environ.get("FEDUNLEARN_LOOPBACK_TIMEOUT", "1200"))
FORGET_PER_NODE = 8


@pytest.mark.slow
def test_compose_topology_on_loopback(tmp_path: Path) -> None:
    from fedunlearn.client.request_service import RequestClient

    run_dir = tmp_path / "run"
    with Loopback(tmp_path / "deploy") as lb:
        node_dirs = lb.init_nodes()
        forget = {i: train_ids(node_dirs[i - 1])[:FORGET_PER_NODE] for i in (1, 2)}

        lb.start_superlink()
        lb.start_supernodes()
        lb.start_request_services()

        # node 1: the CLI, as an operator with shell access would
        out = lb.fedunlearn("node", "forget", "--node-dir", str(node_dirs[0]), "--ids", ",".join(map(str, forget[1])),
                            "--reason", "loopback test: erasure filed on the node")
        (cli_request,) = [r["request_id"] for r in lb.ledger(node_dirs[0])]
        assert str(cli_request) in out
        # node 2: its gRPC endpoint, as a DSAR portal would (TLS with the deployment CA, bearer token)
        with RequestClient(f"localhost:{lb.request_port(2)}", token=lb.request_token,
                           root_cert=lb.ca_cert.read_bytes()) as client:
            grpc_request = client.submit(ids=forget[2], reason="loopback test: erasure filed over gRPC")
        assert grpc_request["status"] == "pending"

        # one round is enough: requests filed before the run are handled before round 1
        run_id = lb.run_app(REPO, lean_run_config(tmp_path, rounds=1, int8=True))
        run = lb.wait_run(run_id, timeout=RUN_TIMEOUT)
        assert run["status"] == "finished:completed", (
            f"run {run_id}: {run['status']} ({run['status-details']})\n{lb.diagnostics(run_id)}")
        spawned = sorted({pid for p in lb.processes for pid in p.seen})
    # every process stopped, the ones Flower spawned included
    assert lb.live_pids() == [], lb.live_pids()
    assert all(p.popen.returncode is not None for p in lb.processes)
    assert len(spawned) > len(lb.processes)  # the SuperExecs were seen, and are gone too

    report = json.loads((run_dir / "report.json").read_text())
    assert report["unlearning"]["gate"]["passed"] is True, report["unlearning"]

    for i, request_id in ((1, cli_request), (2, grpc_request["request_id"])):
        ledger = {r["request_id"]: r for r in lb.ledger(node_dirs[i - 1])}
        assert ledger[request_id]["status"] == "committed", ledger
        left = set(train_ids(node_dirs[i - 1]))
        assert not left & set(forget[i]), f"node {i} still holds forgotten samples {sorted(left & set(forget[i]))}"
        assert left, f"node {i} lost all its data"
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
