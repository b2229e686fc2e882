"""How fast the CLI starts: wall time and peak memory of the commands typed most, each in a fresh process.

``python -m fedunlearn.simulations.bench_startup --out docs/cli/startup.json`` makes a digits
node directory and a small ONNX export in a temporary folder, runs each command
once to warm the disk cache and then ``--runs`` times, and keeps the medians. It
writes the JSON and renders ``startup.md`` beside it (``--render-only`` redoes
just the markdown). The bare interpreter is measured alongside, as the floor.

Peak memory is each child's own maximum resident set, from ``os.wait4``:
``getrusage(RUSAGE_CHILDREN)`` reports the largest of all children so far, so
the setup would hide every figure after it. Linux also carries the parent's
peak into a child across fork and exec, so this process never imports torch or
numpy while it measures: the setup runs in a child of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedunlearn.common.nodes.storage import atomic_write_json
from fedunlearn.common.provenance import git_commit

__all__ = ["COMMANDS", "GOAL", "Command", "main", "measure", "prepare", "render"]

GOAL = {"seconds": 0.5, "peak_rss_mib": 100.0}
CLI = ("-c", "from fedunlearn.simulations.cli import main; main()")


@dataclass(frozen=True)
class Command:
    args: tuple[str, ...]  # after `python`; {node}, {id}, {model} and {input} are filled in per run
    loads: str  # what it needs, so a figure can be read against it


COMMANDS = {
    "python -c pass": Command(("-c", "pass"), "the interpreter alone: the floor"),
    "fedunlearn --help": Command((*CLI, "--help"), "typer and rich"),
    "fedunlearn node forget": Command(
        (*CLI, "node", "forget", "--node-dir", "{node}", "--ids", "{id}", "--reason", "startup benchmark"),
        "node.json, the sample index and the ledger: the ids are checked against the index, not the samples"),
    "fedunlearn node requests": Command((*CLI, "node", "requests", "--node-dir", "{node}", "--json"),
                                        "the ledger (SQLite) only"),
    "fedunlearn edge predict": Command((*CLI, "edge", "predict", "{model}", "{input}"),
                                       "numpy and ONNX Runtime (common/edge/runtime.py)"),
}


def prepare(folder: Path, ids: int) -> None:
    """The fixtures, made in a child process (they need torch): a digits node (through ``node init``), the
    first ``ids`` of its training sample ids (ids.json), an fp32 export of an untrained cnn and one input."""
    import numpy as np

    from fedunlearn.common.checkpoint import save_checkpoint
    from fedunlearn.common.models import ModelSpec, build_model
    from fedunlearn.common.nodes import NodeDirectory

    cli = [sys.executable, *CLI]
    subprocess.run([*cli, "node", "init", "--dataset", "digits", "--partition", "0/4", "--node-dir",
                    str(folder / "node")], check=True, stdout=subprocess.DEVNULL)
    (folder / "ids.json").write_text(json.dumps(NodeDirectory.open(folder / "node").train().ids[:ids].tolist()))
    spec = ModelSpec("cnn", 1, 8, 10)
    save_checkpoint(folder / "model.pt", build_model(spec, seed=0).state_dict(), spec)
    subprocess.run([*cli, "edge", "export", str(folder / "model.pt"), "--dataset", "digits", "--int8", "none",
                    "--out", str(folder / "export")], check=True, stdout=subprocess.DEVNULL)
    np.save(folder / "x.npy", np.zeros((1, 8, 8), dtype=np.float32))


def _run(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one fresh process; raises if it fails."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            err.seek(0)
            raise RuntimeError(f"python {' '.join(args)} exited {process.returncode}: {err.read().decode()}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def measure(runs: int) -> dict[str, Any]:
    """Every command of COMMANDS, one warm-up and ``runs`` timed processes each."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                        "from fedunlearn.simulations.bench_startup import prepare; "
                        "prepare(Path(sys.argv[1]), int(sys.argv[2]))",
                        tmp, str(runs + 1)], check=True)
        ids = iter(json.loads((folder / "ids.json").read_text()))  # each forget files a request of its own
        paths = {"node": str(folder / "node"), "model": str(folder / "export" / "model.onnx"),
                 "input": str(folder / "x.npy")}
        for name, command in COMMANDS.items():
            samples = []
            for _ in range(runs + 1):
                values = {**paths, "id": str(next(ids)) if "{id}" in command.args else ""}
                samples.append(_run([arg.format(**values) for arg in command.args]))
            seconds, peaks = [s for s, _ in samples[1:]], [p for _, p in samples[1:]]
            results[name] = {
                "args": list(command.args), "loads": command.loads, "seconds": seconds, "peak_rss_mib": peaks,
                "median_seconds": statistics.median(seconds), "median_peak_rss_mib": statistics.median(peaks),
            }
    return results


def render(result: dict[str, Any]) -> str:
    """startup.md: one row per command, medians against the goal."""
    dirty = " (with uncommitted changes)" if result["dirty"] else ""
    goal = result["goal"]
    lines = ["# CLI startup", "", f"Made by `{result['command']}` at commit `{result['commit'][:12]}`{dirty}.", "",
             f"Median of {result['runs']} fresh processes each (after one warm-up), {result['cpus']} CPUs, load "
             f"average {result['load_average']:.2f} at the start. Peak memory is the process's own maximum resident "
             f"set. Goal: under {goal['seconds']} s and {goal['peak_rss_mib']:.0f} MiB.", "",
             "| command | wall time (s) | peak memory (MiB) | within goal | loads |", "|---|---|---|---|---|"]
    for name, entry in result["commands"].items():
        within = entry["median_seconds"] < goal["seconds"] and entry["median_peak_rss_mib"] < goal["peak_rss_mib"]
        lines.append(f"| `{name}` | {entry['median_seconds']:.2f} | {entry['median_peak_rss_mib']:.0f} | "
                     f"{'yes' if within else 'no'} | {entry['loads']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/cli/startup.json"))
    parser.add_argument("--runs", type=int, default=5, help="timed processes per command (the median is kept)")
    parser.add_argument("--render-only", action="store_true", help="rewrite startup.md from the JSON, measure nothing")
    args = parser.parse_args(argv)
    if not args.render_only:
        commit, dirty = git_commit()
        flags = argv if argv is not None else sys.argv[1:]
        command = " ".join(["python -m fedunlearn.simulations.bench_startup", *flags])
        load = os.getloadavg()[0]
        commands = measure(args.runs)
        atomic_write_json(args.out, {
            "commit": commit, "dirty": dirty, "command": command, "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "load_average": load, "runs": args.runs, "goal": GOAL, "commands": commands,
        })
    args.out.with_suffix(".md").write_text(render(json.loads(args.out.read_text())))


if __name__ == "__main__":
    main()
