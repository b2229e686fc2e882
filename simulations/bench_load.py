"""Load benchmark of one node's forget-request service: is every acknowledged request kept, and how slow is it?

Processes as in a deployment: the request server runs in its own process, started as
``fedunlearn node serve`` starts it (its defaults, plaintext on loopback, a bearer token); training
runs in another, as a SuperNode's ClientApp does (on one torch thread by default: on a machine that
other work shares, more threads spin instead of training); the callers are threads of this process,
one gRPC channel each. Three phases on the same node, in this order:

- ``idle``: one caller and nothing else on the node: the baseline;
- ``concurrent``: all callers at once, no training: what contention alone costs;
- ``loaded``: all callers at once while the node trains: the case in question.

Samples are synthetic 1x8x8 float32 images (digits' geometry). A Submit re-reads node.json and checks
its ids against the node's sample index (ids and labels, 16 bytes a sample, read and hash-checked once
per index file by the server), never the training file, then writes the ledger; the sample count, which
is what is scaled here, sets the index's size and the trainer's work. A few requests are refused on
purpose (an id the node lacks, or an id of another request of the same phase, so that two overlapping
requests race and exactly one wins). Afterwards every acknowledged request must be in the ledger
exactly once with its samples, and ``List``, paged, must return each exactly once. Latencies are
reported, never asserted.

    python -m fedunlearn.simulations.bench_load --out docs/security/load.json
    python -m fedunlearn.simulations.bench_load --render docs/security/load.json   # writes docs/security/load.md
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import logging
import math
import multiprocessing as mp
import os
import queue
import secrets
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Hashable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from multiprocessing.context import SpawnProcess
from multiprocessing.sharedctypes import SynchronizedArray
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch

from fedunlearn.client.proto import forget_requests_pb2 as pb
from fedunlearn.client.proto import forget_requests_pb2_grpc as pb_grpc
from fedunlearn.client.request_service import MAX_PAGE_SIZE, RemoteRequestError, RequestClient, start_request_server
from fedunlearn.common.data.tensors import DatasetBundle, LabeledData, Preprocessing
from fedunlearn.common.errors import ConfigError, FedUnlearnError
from fedunlearn.common.files import atomic_write_bytes
from fedunlearn.common.nodes import NodeDirectory, NodeLayout, materialise_node
from fedunlearn.common.nodes.records import TRAIN_INDEX
from fedunlearn.common.nodes.storage import atomic_write_json
from fedunlearn.common.provenance import git_commit
from fedunlearn.common.training import TrainConfig, train

__all__ = ["Job", "Settings", "check_filed", "latency_stats", "main", "percentile", "plan_jobs", "render",
           "run_benchmark", "synthetic_node"]

SIDE = 8  # 1xSIDExSIDE samples: digits' geometry
NUM_CLASSES = 10
MODEL = "cnn"
RECIPE = TrainConfig(epochs=1)  # one local epoch per round, the recipe's other defaults
OK = "OK"
TRAINING_FIELDS = ("rounds_started", "rounds_completed", "steps", "samples")
_SPAWN = mp.get_context("spawn")  # fresh interpreters: never fork a process that runs gRPC or torch threads


@dataclass(frozen=True)
class Settings:
    """Every knob of a run; each is a ``--flag`` of the command line and part of the recorded command."""

    samples: int = 100_000
    requests: int = 1000
    callers: int = 32
    idle_requests: int = 200
    ids_per_request: int = 3
    invalid: float = 0.02
    conflicts: float = 0.02
    page_size: int = 25
    train_threads: int = 1  # torch threads of the trainer; more, on a machine other work shares, spin instead of train
    seed: int = 0

    def __post_init__(self) -> None:
        sizes = (self.samples, self.requests, self.callers, self.idle_requests, self.ids_per_request,
                 self.train_threads)
        if min(sizes) < 1:
            raise ConfigError(f"sizes must be >= 1, got {self}")
        if min(self.invalid, self.conflicts) < 0 or self.invalid + self.conflicts >= 1:
            raise ConfigError(f"invalid and conflicts are shares in [0, 1) summing below 1, got {self}")
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ConfigError(f"page_size must be in 1..{MAX_PAGE_SIZE}, got {self.page_size}")

    def phases(self) -> tuple[tuple[str, int, int], ...]:
        """(name, requests, callers) in running order; ``loaded`` alone trains."""
        return (("idle", self.idle_requests, 1), ("concurrent", self.idle_requests, self.callers),
                ("loaded", self.requests, self.callers))

    def command(self, out: Path) -> str:
        flags = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in asdict(self).items())
        return f"python -m fedunlearn.simulations.bench_load --out {out} {flags}"


@dataclass(frozen=True)
class Job:
    """One request a caller files; ``planned_refusal`` says why it should fail ("invalid", "conflict"),
    though in a conflict it is the pair's first to land that wins."""

    reason: str
    ids: tuple[int, ...]
    planned_refusal: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What a caller saw: ``code`` is OK or the gRPC status name (``transport:`` when the node never answered)."""

    job: Job
    code: str
    submit_s: float
    request_id: str | None = None
    status_s: float | None = None
    status_ok: bool = True


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: always an observed value, never an interpolation between two."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def latency_stats(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p99, mean and max of call durations, in milliseconds (None without calls)."""
    ms = [1000 * s for s in seconds]
    if not ms:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    return {"count": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "mean_ms": sum(ms) / len(ms), "max_ms": max(ms)}


def check_filed(expected: Mapping[str, Hashable], seen: Sequence[tuple[str, Hashable]]) -> dict[str, int]:
    """Acknowledged requests (id -> what was filed) against what a listing shows (id, what it holds).

    ``duplicates`` counts extra appearances of an id; ``mismatched``, listed requests that hold other than
    what was filed; ``unexpected``, listed requests nobody was told of (a refusal that recorded anyway).
    """
    counts = Counter(request_id for request_id, _ in seen)
    present = sum(1 for request_id in expected if counts[request_id])
    return {"acknowledged": len(expected), "present": present, "missing": len(expected) - present,
            "duplicates": sum(n - 1 for n in counts.values()),
            "mismatched": sum(1 for request_id, held in seen
                              if request_id in expected and held != expected[request_id]),
            "unexpected": sum(1 for request_id in counts if request_id not in expected)}


def plan_jobs(phase: str, count: int, fresh: Iterator[int], absent: Iterator[int], settings: Settings,
              rng: np.random.Generator) -> list[Job]:
    """``count`` requests of fresh training ids. About ``settings.invalid`` of them swap one id for one the
    node lacks; about ``settings.conflicts`` for an id of an earlier plain request of the phase, each plain
    request lending one id at most, so exactly one of a pair can be acknowledged whichever lands first."""
    jobs: list[Job] = []
    lenders: list[int] = []
    for index in range(count):
        ids = [next(fresh) for _ in range(settings.ids_per_request)]
        draw, planned = rng.random(), None
        if draw < settings.invalid:
            ids[-1], planned = next(absent), "invalid"
        elif draw < settings.invalid + settings.conflicts and lenders:
            ids[-1], planned = jobs[lenders.pop(int(rng.integers(len(lenders))))].ids[0], "conflict"
        else:
            lenders.append(index)
        jobs.append(Job(f"bench {phase} #{index}", tuple(ids), planned))
    return jobs


def synthetic_node(path: Path, samples: int, seed: int) -> NodeDirectory:
    """A node of ``samples`` training samples (random images, random labels) plus a quarter as many kept as
    its hold-out, made the way ``fedunlearn node init`` makes one: the one partition of an IID split."""
    holdout = max(1, samples // 4)
    total = samples + holdout
    generator = torch.Generator().manual_seed(seed)
    pool = LabeledData(torch.randn(total, 1, SIDE, SIDE, generator=generator),
                       torch.randint(0, NUM_CLASSES, (total,), generator=generator), torch.arange(total))
    bundle = DatasetBundle("synthetic", pool, pool.subset(torch.zeros(total, dtype=torch.bool)),
                           tuple(map(str, range(NUM_CLASSES))), Preprocessing(1.0, (0.0,), (1.0,)))
    layout = NodeLayout("synthetic", 0, 1, partitioner="iid", seed=seed, holdout_fraction=holdout / total)
    return materialise_node(path, bundle, layout)


def _plan(settings: Settings, train_ids: list[int], first_absent: int) -> dict[str, list[Job]]:
    needed = settings.ids_per_request * sum(count for _, count, _ in settings.phases())
    if needed > len(train_ids):
        raise ConfigError(f"the phases name {needed} distinct sample ids but the node holds {len(train_ids)}; "
                          "raise --samples or lower the request counts")
    rng = np.random.default_rng(settings.seed)
    fresh = iter(rng.permutation(train_ids).tolist())
    absent = itertools.count(first_absent)
    return {name: plan_jobs(name, count, fresh, absent, settings, rng) for name, count, _ in settings.phases()}


def _serve(node_dir: str, token: str, ports: Any, stop: Event) -> None:
    """Child process: the server with ``fedunlearn node serve``'s defaults, each call logged (to a file)."""
    logging.basicConfig(filename=Path(node_dir).parent / "serve.log", level=logging.INFO)
    server, port = start_request_server(Path(node_dir), port=0, token=token, insecure=True)
    ports.put(port)
    stop.wait()
    server.stop(grace=2).wait()


def _train(node_dir: str, threads: int, go: Event, stop: Event, progress: SynchronizedArray[int]) -> None:
    """Child process: once told to go, train-message work until told to stop, touching the node as a
    SuperNode does: open it (``NodeSession.start``: exclusive lock, purge check), read its retain data
    (``train_round``: shared lock, ledger), then one local epoch of the federation's CNN on them."""
    from fedunlearn.common.models import ModelSpec, build_model  # here: torchvision costs the other processes seconds

    torch.set_num_threads(threads)
    go.wait()
    while not stop.is_set():
        with progress.get_lock():
            progress[0] += 1
        node = NodeDirectory.open(node_dir)
        retain = node.retain()
        shape = node.meta["input_shape"]
        model = build_model(ModelSpec(MODEL, int(shape[0]), int(shape[1]), node.num_classes), seed=0)
        model.register_forward_pre_hook(lambda _, inputs: _count_step(progress, len(inputs[0])))
        train(model, retain, RECIPE, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
        with progress.get_lock():
            progress[1] += 1


def _count_step(progress: SynchronizedArray[int], batch: int) -> None:
    """``train`` runs the model forward once per optimizer step: count steps as they happen, since at
    100,000 samples a single round can outlast the phase."""
    with progress.get_lock():
        progress[2] += 1
        progress[3] += batch


@dataclass(frozen=True)
class _Trainer:
    """The training process and what this one shares with it: two events and its running totals."""

    process: SpawnProcess
    go: Event
    stop: Event
    progress: SynchronizedArray[int]

    def begin(self) -> None:
        """Start training and return once its first round has begun (imports are done by then)."""
        self.go.set()
        deadline = time.monotonic() + 120
        while self.snapshot()["rounds_started"] == 0:
            if not self.process.is_alive() or time.monotonic() > deadline:
                raise FedUnlearnError("the training process died or never started; run it alone to see why")
            time.sleep(0.01)

    def snapshot(self) -> dict[str, int]:
        with self.progress.get_lock():
            return dict(zip(TRAINING_FIELDS, self.progress[:], strict=True))

    def end(self) -> dict[str, int]:
        """What was trained while the phase ran; the round in flight finishes after."""
        done = self.snapshot()
        if not self.process.is_alive():
            raise FedUnlearnError("the training process died during the loaded phase; run it alone to see why")
        self.stop.set()
        return done


def _port(ports: Any, server: SpawnProcess) -> int:
    """The server's port, once it listens; fails at once if it died starting (its traceback is on stderr)."""
    deadline = time.monotonic() + 120
    while server.is_alive() and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            return int(ports.get(timeout=0.1))
    raise FedUnlearnError("the request server did not start; its error is above")


@contextlib.contextmanager
def _processes(node: NodeDirectory, token: str, train_threads: int) -> Iterator[tuple[str, _Trainer]]:
    """The server (yields its target) and the waiting trainer, both stopped and joined on the way out."""
    ports, stop_server, go, stop, progress = (_SPAWN.Queue(), _SPAWN.Event(), _SPAWN.Event(), _SPAWN.Event(),
                                              _SPAWN.Array("q", len(TRAINING_FIELDS)))
    process = _SPAWN.Process(target=_train, args=(str(node.path), train_threads, go, stop, progress))
    trainer = _Trainer(process, go, stop, progress)
    server = _SPAWN.Process(target=_serve, args=(str(node.path), token, ports, stop_server))
    server.start()
    trainer.process.start()
    try:
        yield f"127.0.0.1:{_port(ports, server)}", trainer
    finally:
        stop_server.set()
        trainer.stop.set()
        trainer.go.set()  # a trainer never told to go sees the stop at once
        for process in (server, trainer.process):
            process.join(timeout=600)
            if process.is_alive():
                process.terminate()


def _file(client: RequestClient, job: Job) -> Outcome:
    began = time.perf_counter()
    try:
        filed = client.submit(ids=job.ids, reason=job.reason)
    except RemoteRequestError as err:
        return Outcome(job, err.code.name, time.perf_counter() - began)
    except grpc.RpcError as err:
        return Outcome(job, f"transport:{err.code().name}", time.perf_counter() - began)  # type: ignore[attr-defined]
    submitted = time.perf_counter()
    try:
        status_ok = client.status(filed["request_id"]) == filed
    except (RemoteRequestError, grpc.RpcError):
        status_ok = False
    return Outcome(job, OK, submitted - began, filed["request_id"], time.perf_counter() - submitted, status_ok)


def _caller(target: str, token: str, jobs: list[Job], start: threading.Barrier) -> list[Outcome]:
    with RequestClient(target, token=token) as client:
        with contextlib.suppress(RemoteRequestError):  # connect and pass the token check before the clock runs
            client.status("req-warm-up")
        start.wait(timeout=120)
        return [_file(client, job) for job in jobs]


def _run_callers(target: str, token: str, jobs: list[Job], callers: int) -> tuple[list[Outcome], float]:
    """Every job, dealt round-robin to ``callers`` threads that start together; (outcomes, wall seconds)."""
    start = threading.Barrier(callers + 1)
    with ThreadPoolExecutor(callers) as pool:
        running = [pool.submit(_caller, target, token, jobs[i::callers], start) for i in range(callers)]
        start.wait(timeout=120)
        began = time.perf_counter()
        outcomes = [outcome for future in running for outcome in future.result()]
    return outcomes, time.perf_counter() - began


def _phase_summary(outcomes: list[Outcome], seconds: float, callers: int) -> dict[str, Any]:
    acknowledged = [o for o in outcomes if o.code == OK]
    return {
        "callers": callers, "attempts": len(outcomes), "acknowledged": len(acknowledged),
        "expected_acknowledged": sum(o.job.planned_refusal is None for o in outcomes),
        "refused": dict(sorted(Counter(o.code for o in outcomes if o.code != OK).items())),
        "seconds": seconds, "acknowledged_per_s": len(acknowledged) / seconds,
        "status_mismatches": sum(not o.status_ok for o in acknowledged),
        "latency_ms": {"submit": latency_stats([o.submit_s for o in acknowledged]),
                       "submit_refused": latency_stats([o.submit_s for o in outcomes if o.code != OK]),
                       "status": latency_stats([o.status_s for o in acknowledged if o.status_s is not None])},
    }


def _list_all(target: str, token: str, page_size: int) -> tuple[list[tuple[str, Hashable]], list[int]]:
    """Every request through ``List``, ``page_size`` at a time: (id, (reason, sample count)) and each page's
    length. The raw stub, not ``RequestClient.list``, because the pages themselves are under test."""
    seen: list[tuple[str, Hashable]] = []
    pages: list[int] = []
    page_token = ""
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ForgetRequestsStub(channel)
        while True:
            reply = stub.List(pb.ListRequest(page_size=page_size, page_token=page_token),
                              metadata=(("authorization", f"Bearer {token}"),), timeout=60)
            seen += [(r.request_id, (r.reason, r.num_samples)) for r in reply.requests]
            pages.append(len(reply.requests))
            page_token = reply.next_page_token
            if not page_token:
                return seen, pages


def _measure(settings: Settings, node: NodeDirectory, plans: dict[str, list[Job]]) -> dict[str, Any]:
    """Run the phases and the listing against the node; the checks' raw material comes back."""
    token = secrets.token_urlsafe(24)
    phases: list[dict[str, Any]] = []
    outcomes: list[Outcome] = []
    with _processes(node, token, settings.train_threads) as (target, trainer):
        for name, _, callers in settings.phases():
            if name == "loaded":
                trainer.begin()
            found, seconds = _run_callers(target, token, plans[name], callers)
            phases.append({"phase": name, **_phase_summary(found, seconds, callers),
                           "training": trainer.end() if name == "loaded" else None})
            outcomes += found
        listed, pages = _list_all(target, token, settings.page_size)
    return {"phases": phases, "outcomes": outcomes, "listed": listed, "pages": pages}


def _checks(node: NodeDirectory, measured: dict[str, Any], page_size: int) -> dict[str, Any]:
    jobs = {o.request_id: o.job for o in measured["outcomes"] if o.code == OK}
    ledger = check_filed({rid: (job.reason, tuple(sorted(job.ids))) for rid, job in jobs.items()},
                         [(r.request_id, (r.reason, r.sample_ids)) for r in node.ledger.list()])
    listed = check_filed({rid: (job.reason, len(job.ids)) for rid, job in jobs.items()}, measured["listed"])
    pages = measured["pages"]
    return {"ledger": ledger,
            "list": {**listed, "page_size": page_size, "pages": len(pages), "largest_page": max(pages)}}


def _passed(phases: list[dict[str, Any]], checks: dict[str, Any]) -> bool:
    clean = all(c["present"] == c["acknowledged"] and not (c["duplicates"] or c["mismatched"] or c["unexpected"])
                for c in (checks["ledger"], checks["list"]))
    return clean and checks["list"]["largest_page"] <= checks["list"]["page_size"] and all(
        p["acknowledged"] == p["expected_acknowledged"] and not p["status_mismatches"] for p in phases)


def _parameters(settings: Settings, node: NodeDirectory) -> dict[str, Any]:
    files = {part: node.path / "data" / node.meta["files"][part]["path"] for part in ("train", TRAIN_INDEX)}
    return {**asdict(settings), "train_samples": len(node.train()), "holdout_samples": len(node.holdout()),
            "sample_shape": node.meta["input_shape"], "train_file_mb": files["train"].stat().st_size / 2**20,
            "train_index_mb": files[TRAIN_INDEX].stat().st_size / 2**20,
            "server_workers": inspect.signature(start_request_server).parameters["max_workers"].default,
            "transport": "plaintext gRPC on 127.0.0.1, bearer token",
            "training": {"model": MODEL, **asdict(RECIPE)}}


def run_benchmark(settings: Settings, out: Path) -> dict[str, Any]:
    """Make the node in a temporary folder, run the phases, check ledger and ``List``, write ``out`` (JSON)."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as work:
        node = synthetic_node(Path(work) / "node", settings.samples, settings.seed)
        train_ids = node.train().ids.tolist()
        first_absent = 1 + max(train_ids + node.holdout().ids.tolist())  # beyond every id the node was made with
        measured = _measure(settings, node, _plan(settings, train_ids, first_absent))
        checks = _checks(node, measured, settings.page_size)
        parameters = _parameters(settings, node)
    commit, dirty = git_commit()
    result = {"commit": commit, "dirty": dirty, "command": settings.command(out), "parameters": parameters,
              "machine": {"cpus": os.cpu_count(), "load_average_before": list(load_before),
                          "load_average_after": list(os.getloadavg())},
              "phases": measured["phases"], "checks": checks, "passed": _passed(measured["phases"], checks)}
    atomic_write_json(out, result)
    return result


def _ms(stats: Mapping[str, Any], key: str) -> str:
    return "-" if stats[key] is None else f"{stats[key]:.1f}"


def _phase_row(phase: Mapping[str, Any]) -> str:
    submit, status = phase["latency_ms"]["submit"], phase["latency_ms"]["status"]
    refused = ", ".join(f"{n} {code}" for code, n in phase["refused"].items()) or "none"
    training = phase["training"]
    trained = (f"{training['steps']} steps, {training['samples']} samples ({training['rounds_completed']} "
               "rounds done)" if training else "no")
    cells = [phase["phase"], phase["callers"], trained, _ms(submit, "p50_ms"), _ms(submit, "p99_ms"),
             _ms(status, "p50_ms"), _ms(status, "p99_ms"),
             f"{phase['acknowledged']} of {phase['attempts']} ({refused})", f"{phase['acknowledged_per_s']:.1f}"]
    return "| " + " | ".join(map(str, cells)) + " |"


def render(result: Mapping[str, Any], source: Path) -> str:
    """load.md: the setting, latency per phase, and the checks, from the JSON alone."""
    p, checks = result["parameters"], result["checks"]
    dirty = " (with uncommitted changes)" if result["dirty"] else ""
    lines = [
        "# Load benchmark: one node's forget-request service", "",
        f"Generated by `python -m fedunlearn.simulations.bench_load --render {source}` from `{source.name}`, which "
        f"`{result['command']}` made at commit `{result['commit'][:12]}`{dirty}. The method is in the module's "
        "docstring.", "",
        f"A node with {p['train_samples']} training samples (plus {p['holdout_samples']} hold-out), each "
        f"{'x'.join(map(str, p['sample_shape']))} float32 ({p['train_file_mb']:.1f} MiB training file, which Submit "
        f"never reads: it checks ids against the {p['train_index_mb']:.1f} MiB sample index, hash-checked once per "
        f"index file). Requests name {p['ids_per_request']} sample ids; {p['transport']}; "
        f"{p['server_workers']} server workers. Training: one epoch of {p['training']['model']} per round (batch "
        f"{p['training']['batch_size']}) on the retain data, in its own process on {p['train_threads']} torch "
        "thread(s). Machine: "
        f"{result['machine']['cpus']} CPUs, load average {result['machine']['load_average_before'][0]:.2f} before "
        "the run (other work shares the machine: compare phases of one run, not runs).", "",
        "| phase | callers | training during the phase | Submit p50 ms | Submit p99 ms | Status p50 ms | "
        "Status p99 ms | acknowledged (refused) | acknowledged / s |", "|---|---|---|---|---|---|---|---|---|",
        *map(_phase_row, result["phases"]), "",
        f"Latency is from a caller's send to its reply. Every call waits for one of the server's "
        f"{p['server_workers']} worker threads, so with more callers than workers a Status, cheap alone, queues "
        "behind Submits; the refused calls' latencies are in the JSON.", "",
        "Every acknowledged request, looked up afterwards:", "",
        "| where | acknowledged | present | duplicates | missing | mismatched | unexpected |",
        "|---|---|---|---|---|---|---|",
        *(f"| {where} | {c['acknowledged']} | {c['present']} | {c['duplicates']} | {c['missing']} | "
          f"{c['mismatched']} | {c['unexpected']} |" for where, c in (("ledger", checks["ledger"]),
                                                                     ("List", checks["list"]))), "",
        f"`List` took {checks['list']['pages']} pages of at most {checks['list']['page_size']} (largest "
        f"{checks['list']['largest_page']}). Overall: {'passed' if result['passed'] else 'FAILED'}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Load benchmark of a node's forget-request service.")
    parser.add_argument("--out", type=Path, default=Path("docs/security/load.json"))
    parser.add_argument("--render", type=Path, help="only write the .md beside this result JSON")
    for field in fields(Settings):
        default = field.default
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(default), default=default)
    args = vars(parser.parse_args(argv))
    if args["render"] is not None:
        source = args["render"]
        atomic_write_bytes(source.with_suffix(".md"), render(json.loads(source.read_text()), source).encode(),
                           mode=0o644)
        return
    result = run_benchmark(Settings(**{f.name: args[f.name] for f in fields(Settings)}), args["out"])
    print(json.dumps({phase["phase"]: phase["latency_ms"] for phase in result["phases"]}, indent=2))
    print("checks passed" if result["passed"] else "CHECKS FAILED", json.dumps(result["checks"]))


if __name__ == "__main__":
    main()
