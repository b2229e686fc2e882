"""Run the docker-compose topology as local processes on 127.0.0.1, and stop every one of them.

The command lines come from ``topology.py`` (the same templates the compose file
is checked against), filled with temporary paths and free ports. TLS is on, with
certificates from ``scripts/make-certs.sh``, as in the compose file.

Every process is started in a new session with its own log file and its own
``FLWR_HOME`` (as each container has its own). Stopping is by PID: the tree of
each started process (SuperLink -> SuperExec -> ServerApp, SuperNode -> SuperExec
-> ClientApp) is read from /proc, the leader gets SIGTERM, and whatever of the
tree is still alive after a grace period gets SIGTERM and then SIGKILL. Flower's
SuperExec runs in a session of its own, so killing a process group alone would
miss it.

``flwr run`` exits 0 even when the run fails, so :meth:`Loopback.wait_run` polls
``flwr ls --run-id ... --format json`` for the run's status instead.

Fault tests :meth:`Loopback.kill` a process on purpose (SIGKILL to it alone, as a
crash would): its exit no longer counts as a failure, and its tree is still
stopped on exit.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import tomli_w

from tests.deployment import topology as T

__all__ = ["DEPLOY_SCENARIO", "TRAIN_RECEIVED", "UNLEARN_RECEIVED", "Loopback", "LoopbackError", "ManagedProcess",
           "consistent_ledgers", "free_ports", "lean_run_config", "make_certs", "stop_process", "train_ids"]

REPO = Path(__file__).resolve().parents[2]
DEPLOY_SCENARIO = REPO / "simulations" / "digits-deploy.toml"
CONNECTION = "fedunlearn-loopback"
# what a SuperNode logs when a message reaches it: training, and the unlearning phase's steps
TRAIN_RECEIVED = r"Receiving: train message"
UNLEARN_RECEIVED = r"Receiving: train\.unlearn message"
FINISHED = "finished"


class LoopbackError(RuntimeError):
    """Something in the loopback deployment did not come up or did not finish; the message has the logs."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free on 127.0.0.1 a moment ago."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def make_certs(out: Path) -> Path:
    """A CA and server certificate made by scripts/make-certs.sh (what the compose file mounts)."""
    subprocess.run(["bash", str(REPO / "scripts" / "make-certs.sh"), "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=120)
    for name in T.CERT_FILES:
        if not (out / name).is_file():
            raise LoopbackError(f"scripts/make-certs.sh did not write {out / name}")
    return out


def train_ids(node_dir: Path) -> list[int]:
    """Ids of the training samples still on a node's disk (those under pending requests included)."""
    from fedunlearn.common.nodes import NodeDirectory

    ids: list[int] = NodeDirectory.open(node_dir).train().ids.tolist()
    return ids


def lean_run_config(root: Path, *, rounds: int) -> dict[str, Any]:
    """Run config for the deployment's scenario without baselines and without the int8 export: the deployment
    tests concern requests, gate, commit and processes, and on two cores each baseline round and each
    artifact's audit costs a ClientApp process per message on every node. The baselines and the int8
    artifacts' audit run on real ClientApps in tests/server (the session's ``tiny_run``, test_edge_phase.py)."""
    scenario = tomllib.loads(DEPLOY_SCENARIO.read_text())
    scenario["baselines"] = {"federated_retrain": False, "federated_finetune_rounds": 0}
    scenario["export"] = {"int8": "none"}
    path = root / "scenario.toml"
    path.write_text(tomli_w.dumps(scenario))
    return {"scenario": str(path), "run-dir": str(root / "run"), "nodes-root": "none", "rounds": rounds}


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a live process, or None."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[19])


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            children.setdefault(st[1], []).append(int(entry.name))
    return children


@dataclass
class ManagedProcess:
    """One started process, its log, and (when stopping) the tree it spawned."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path
    start_time: int = 0
    seen: dict[int, int] = field(default_factory=dict)  # pid -> start time, every process of its tree seen
    killed: bool = False  # killed on purpose by a fault test: its exit is no failure

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def failed(self) -> bool:
        """Exited, and not because a test killed it."""
        return not self.killed and not self.alive()

    def snapshot_tree(self) -> None:
        """Remember every live descendant (by pid and start time, so a reused pid is never signalled)."""
        children = _children()
        todo = [self.pid]
        while todo:
            pid = todo.pop()
            st = _stat(pid)
            if st is None or self.seen.setdefault(pid, st[2]) != st[2]:
                continue  # gone, or its pid now names another process (a killed leader's pid reused)
            todo.extend(children.get(pid, []))

    def live_tree(self) -> list[int]:
        """PIDs of the remembered tree still running (zombies count as gone)."""
        live = []
        for pid, started in self.seen.items():
            st = _stat(pid)
            if st is not None and st[2] == started and st[0] != "Z":
                live.append(pid)
        return live

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def stop_process(process: ManagedProcess, grace: float = 10.0) -> None:
    """SIGTERM the process, wait up to ``grace``; then SIGTERM, then SIGKILL, whatever is left of its tree."""
    process.snapshot_tree()
    if process.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=grace)
    # its children (SuperExec, app processes) get a moment to follow their parent, then a signal
    deadline = time.monotonic() + min(grace, 5.0)
    while process.live_tree() and time.monotonic() < deadline:
        time.sleep(0.2)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = process.live_tree()
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + min(grace, 3.0)
        while process.live_tree() and time.monotonic() < deadline:
            time.sleep(0.1)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.popen.wait(timeout=5)


class Loopback:
    """SuperLink, SuperNodes, node init and request endpoints of ``topology.py`` on loopback.

    Use as a context manager: every process it started is stopped on exit, whatever happened.
    """

    def __init__(self, root: Path, *, certs_dir: Path | None = None, request_token: str = "loopback-token",
                 cwd: Path = REPO, env: Mapping[str, str] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs_dir = self.root / "logs"
        self.logs_dir.mkdir(exist_ok=True)
        self.certs_dir = make_certs(self.root / "certs") if certs_dir is None else Path(certs_dir)
        self.ca_cert = self.certs_dir / "ca.crt"
        self.cwd = Path(cwd)
        self.request_token = request_token
        self.placement = T.loopback_placement(self.root, self.certs_dir, free_ports(1 + 2 * T.NUM_NODES),
                                              request_token)
        Path(self.placement.state_dir).mkdir(parents=True, exist_ok=True)
        self.processes: list[ManagedProcess] = []
        self.cli_home = self.root / "cli" / "flwr-home"
        self._write_cli_config()
        bin_dir = str(Path(sys.executable).parent)
        self.base_env = {
            **os.environ,
            **T.ENVIRONMENT,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
            # not part of the topology: keeps several torch processes from fighting over CI's two cores
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            **(env or {}),
        }
        self._bin_dir = bin_dir

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Loopback:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _executable(self, name: str) -> str:
        local = Path(self._bin_dir) / name
        found = str(local) if local.exists() else shutil.which(name)
        if found is None:
            raise LoopbackError(f"{name} is not installed (looked in {self._bin_dir} and PATH)")
        return found

    def argv(self, service_name: str) -> list[str]:
        return T.loopback_argv(T.service(service_name), self.placement)

    def start(self, service_name: str) -> ManagedProcess:
        """Start one long-running service of the topology in a new session, logging to logs/<name>.log."""
        spec = T.service(service_name)
        argv = T.loopback_argv(spec, self.placement)
        env = {**self.base_env, **T.service_env(spec, self.placement)}
        home = self.root / service_name / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"{service_name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [self._executable(argv[0]), *argv[1:]], cwd=self.cwd, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, env={**env, "FLWR_HOME": str(home)},
                start_new_session=True,
            )
        process = ManagedProcess(service_name, argv, popen, log_path)
        process.snapshot_tree()
        self.processes.append(process)
        return process

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM each started process (request endpoints, SuperNodes, then the SuperLink), then its tree."""
        for process in reversed(self.processes):  # started last, stopped first
            stop_process(process, grace)

    def snapshot(self) -> None:
        """Remember the current process trees (a child outlives its parent's crash; we still stop it)."""
        for process in self.processes:
            process.snapshot_tree()

    def kill(self, process: ManagedProcess) -> None:
        """SIGKILL ``process`` alone, as a crash would, leaving its tree (``live_tree()``) to react as Flower
        makes it. The process is reaped at once: to its children a zombie parent still looks alive."""
        process.snapshot_tree()
        process.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.popen.wait(timeout=30)

    def live_pids(self) -> list[int]:
        """Every process this harness started or saw spawned that is still running."""
        return sorted({pid for p in self.processes for pid in p.live_tree()})

    # --- bring-up ---------------------------------------------------------------------------

    def init_nodes(self, timeout: float = 300.0) -> list[Path]:
        """Run each node's one-shot `fedunlearn node init`, all at once (as compose starts its init services)."""
        running = []
        for i in range(1, T.NUM_NODES + 1):
            spec = T.service(f"node-init-{i}")
            argv = T.loopback_argv(spec, self.placement)
            log_path = self.logs_dir / f"{spec.name}.log"
            with log_path.open("wb") as log:
                popen = subprocess.Popen([self._executable(argv[0]), *argv[1:]], cwd=self.cwd,
                                         env={**self.base_env, **T.service_env(spec, self.placement)},
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            running.append(ManagedProcess(spec.name, argv, popen, log_path))
        failed = []
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.popen.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop_process(process, grace=2.0)
            if process.popen.returncode != 0:
                failed.append(f"{' '.join(process.argv)} exited {process.popen.returncode}:\n{process.log_tail()}")
        if failed:
            raise LoopbackError("\n".join(failed))
        return [Path(self.placement.node_dirs[i]) for i in range(1, T.NUM_NODES + 1)]

    def fedunlearn(self, *args: str, timeout: float = 300.0) -> str:
        """Run the `fedunlearn` CLI; its stdout, or LoopbackError with the output when it fails."""
        result = subprocess.run([self._executable("fedunlearn"), *args], cwd=self.cwd, env=self.base_env,
                                capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise LoopbackError(f"fedunlearn {' '.join(args)} exited {result.returncode}:\n"
                                f"{result.stdout}{result.stderr}")
        return result.stdout

    def ledger(self, node_dir: Path) -> list[dict[str, Any]]:
        """The node's requests with status and receipt, as `fedunlearn node requests --json` prints them."""
        rows = json.loads(self.fedunlearn("node", "requests", "--node-dir", str(node_dir), "--json"))
        if not isinstance(rows, list):
            raise LoopbackError(f"`fedunlearn node requests` printed {rows!r}")
        return rows

    def node_dir(self, i: int) -> Path:
        return Path(self.placement.node_dirs[i])

    def request_port(self, i: int) -> int:
        return self.placement.request_ports[i]

    def start_superlink(self, timeout: float = 60.0) -> ManagedProcess:
        process = self.start("superlink")
        self._wait(lambda: _port_open(self.placement.superlink_port), [process], timeout,
                   f"the SuperLink to listen on 127.0.0.1:{self.placement.superlink_port}")
        return process

    def start_supernodes(self, timeout: float = 120.0) -> list[ManagedProcess]:
        started = [self.start(f"supernode-{i}") for i in range(1, T.NUM_NODES + 1)]
        self.wait_online(timeout)
        return started

    def wait_online(self, timeout: float = 120.0) -> None:
        """Wait until the SuperLink lists every SuperNode as online, while no started process fails."""
        self._wait(lambda: self.online_nodes() >= T.NUM_NODES, self.processes, timeout,
                   f"{T.NUM_NODES} SuperNodes to be online")

    def start_request_services(self, nodes: Iterable[int] | None = None,
                               timeout: float = 120.0) -> list[ManagedProcess]:
        chosen = list(range(1, T.NUM_NODES + 1) if nodes is None else nodes)
        started = [self.start(f"requests-{i}") for i in chosen]
        self._wait(lambda: all(_port_open(self.request_port(i)) for i in chosen), started, timeout,
                   "the forget-request endpoints to listen")
        return started

    def _wait(self, ready: Any, watched: list[ManagedProcess], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.snapshot()
            dead = [p for p in watched if p.failed()]
            if dead:
                raise LoopbackError(f"waiting for {what}: {', '.join(p.name for p in dead)} exited\n"
                                    + self.diagnostics())
            if ready():
                return
            time.sleep(1.0)
        raise LoopbackError(f"timed out after {timeout:.0f}s waiting for {what}\n" + self.diagnostics())

    def wait_log(self, process: ManagedProcess, pattern: str, timeout: float) -> None:
        """Wait until ``process``'s log matches ``pattern`` (a regex; ``.`` spans lines), while no process fails."""
        regex = re.compile(pattern, re.DOTALL)
        self._wait(lambda: regex.search(process.log_text()) is not None, self.processes, timeout,
                   f"{process.name}'s log to match {pattern!r}")

    # --- the flwr CLI -------------------------------------------------------------------------

    def _write_cli_config(self) -> None:
        self.cli_home.mkdir(parents=True, exist_ok=True)
        config = {"superlink": {
            "default": CONNECTION,
            CONNECTION: {"address": f"127.0.0.1:{self.placement.superlink_port}",
                         "root-certificates": str(self.ca_cert.resolve())},
        }}
        (self.cli_home / "config.toml").write_text(tomli_w.dumps(config))

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self._executable("flwr"), *args], cwd=self.cwd, capture_output=True, text=True,
                              timeout=timeout, check=False,
                              env={**self.base_env, "FLWR_HOME": str(self.cli_home)})

    def flwr_json(self, *args: str, timeout: float = 120.0) -> dict[str, Any]:
        result = self.flwr(*args, "--format", "json", timeout=timeout)
        out = result.stdout
        try:
            value, _ = json.JSONDecoder().raw_decode(out[out.index("{"):])
        except ValueError as err:
            raise LoopbackError(f"`flwr {' '.join(args)}` printed no JSON (exit {result.returncode}):\n"
                                f"{out}\n{result.stderr}") from err
        if not isinstance(value, dict):
            raise LoopbackError(f"`flwr {' '.join(args)}` printed {value!r}")
        return value

    def online_nodes(self) -> int:
        try:
            listed = self.flwr_json("supernode", "ls", CONNECTION, timeout=60)
        except (LoopbackError, subprocess.TimeoutExpired):
            return 0
        return sum(1 for n in listed.get("nodes", []) if n.get("status") == "online")

    def run_app(self, app_dir: Path, run_config: Mapping[str, Any]) -> str:
        """`flwr run APP CONNECTION --run-config <toml>`; returns the run id (the run goes on in the background)."""
        config_file = self.root / "cli" / f"run-config-{len(list(self.root.glob('cli/run-config-*')))}.toml"
        config_file.write_text(tomli_w.dumps(dict(run_config)))
        started = self.flwr_json("run", str(app_dir), CONNECTION, "--run-config", str(config_file), timeout=300)
        if not started.get("success") or not started.get("run-id"):
            raise LoopbackError(f"flwr run did not start a run: {started}\n" + self.diagnostics())
        return str(started["run-id"])

    def run_status(self, run_id: str) -> dict[str, Any]:
        listed = self.flwr_json("ls", CONNECTION, "--run-id", run_id, timeout=60)
        runs = listed.get("runs") or []
        if not listed.get("success") or len(runs) != 1:
            raise LoopbackError(f"flwr ls --run-id {run_id}: {listed}")
        run: dict[str, Any] = runs[0]
        return run

    def serverapp_alive(self) -> bool:
        """Whether a ServerApp runs in the tree of a started process not killed on purpose (whose orphans
        are dying), read from /proc after ``snapshot``."""
        for process in (p for p in self.processes if not p.killed):
            for pid in process.live_tree():
                with contextlib.suppress(OSError):
                    if b"flwr-serverapp" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return True
        return False

    def wait_run(self, run_id: str, timeout: float, poll: float = 5.0, quiet: float = 60.0) -> dict[str, Any]:
        """Poll until the run's status is finished:* and return its `flwr ls` record; stop it on timeout.

        Each `flwr ls` costs a Flower CLI start (about two CPU seconds, taken from the run on two cores), so
        while a ServerApp is alive, and the run therefore not finished, it is asked only every ``quiet`` s."""
        deadline = time.monotonic() + timeout
        asked = -math.inf
        while True:
            self.snapshot()
            dead = [p for p in self.processes if p.failed()]
            if dead:
                raise LoopbackError(f"run {run_id}: {', '.join(p.name for p in dead)} exited\n"
                                    + self.diagnostics(run_id))
            if not self.serverapp_alive() or time.monotonic() - asked >= quiet:
                asked = time.monotonic()
                with contextlib.suppress(LoopbackError, subprocess.TimeoutExpired):
                    run = self.run_status(run_id)
                    if str(run.get("status", "")).startswith(FINISHED):
                        return run
            if time.monotonic() > deadline:
                self.flwr("stop", run_id, CONNECTION, timeout=60)
                raise LoopbackError(f"run {run_id} did not finish within {timeout:.0f}s\n"
                                    + self.diagnostics(run_id))
            time.sleep(poll)

    def run_log(self, run_id: str) -> str:
        """The ServerApp's log of a run, as `flwr log RUN_ID CONNECTION --show` prints it."""
        try:
            result = self.flwr("log", run_id, CONNECTION, "--show", timeout=60)
        except subprocess.TimeoutExpired:
            return "(flwr log timed out)"
        return result.stdout + result.stderr

    def diagnostics(self, run_id: str | None = None, lines: int = 40) -> str:
        parts = [f"--- {p.name} (pid {p.pid}, {'running' if p.alive() else f'exit {p.popen.returncode}'}) "
                 f"{p.log_path}\n{p.log_tail(lines)}" for p in self.processes]
        if run_id is not None:
            parts.append(f"--- flwr log {run_id}\n" + "\n".join(self.run_log(run_id).splitlines()[-lines * 2:]))
        return "\n".join(parts)


def consistent_ledgers(lb: Loopback) -> dict[str, dict[str, Any]]:
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
