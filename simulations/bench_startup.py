"""How fast the CLI starts: wall time and peak memory of the commands typed most, each in a fresh process.

``python -m simulations.bench_startup --out docs/cli/startup.json`` makes a digits
node directory and a small ONNX export in a temporary folder, runs each command
once to warm the disk cache and then ``--runs`` times, and keeps the medians. It
writes the JSON and renders ``startup.md`` beside it (``--render-only`` redoes
just the markdown).

Peak memory is each child's own maximum resident set, from ``os.wait4``:
``getrusage(RUSAGE_CHILDREN)`` reports the largest of all children so far, so
the setup (which loads torch) would hide every figure after it.
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

from common.nodes.storage import atomic_write_json
from common.provenance import git_commit

__all__ = ["COMMANDS", "GOAL", "Command", "main", "measure", "render"]

GOAL = {"seconds": 0.5, "peak_rss_mib": 100.0}
CLI = [sys.executable, "-c", "from simulations.cli import main; main()"]


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]  # after `fedunlearn`; {node}, {id}, {model} and {input} are filled in per run
    loads: str  # what it needs beyond typer and rich, so a figure can be read against it


COMMANDS = {
    "fedunlearn --help": Command(("--help",), "nothing"),
    "fedunlearn node forget": Command(
        ("node", "forget", "--node-dir", "{node}", "--ids", "{id}", "--reason", "startup benchmark"),
        "torch: the ids are checked against the node's samples, stored as torch tensors"),
    "fedunlearn node requests": Command(("node", "requests", "--node-dir", "{node}", "--json"),
                                        "the ledger (SQLite) only"),
    "fedunlearn edge predict": Command(("edge", "predict", "{model}", "{input}"),
                                       "numpy and ONNX Runtime (common/edge/runtime.py)"),
}


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one fresh ``fedunlearn`` process; raises if it fails."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen([*CLI, *argv], stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            err.seek(0)
            raise RuntimeError(f"fedunlearn {' '.join(argv)} exited {process.returncode}: {err.read().decode()}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def _setup(folder: Path, env: dict[str, str]) -> dict[str, str]:
    """A digits node (through ``node init``) and an fp32 export of an untrained cnn with one input beside it."""
    import numpy as np

    from common.checkpoint import save_checkpoint
    from common.models import ModelSpec, build_model

    node, checkpoint, export = folder / "node", folder / "model.pt", folder / "export"
    subprocess.run([*CLI, "node", "init", "--dataset", "digits", "--partition", "0/4", "--node-dir", str(node)],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    spec = ModelSpec("cnn", 1, 8, 10)
    save_checkpoint(checkpoint, build_model(spec, seed=0).state_dict(), spec)
    subprocess.run([*CLI, "edge", "export", str(checkpoint), "--dataset", "digits", "--int8", "none", "--out",
                    str(export)], env=env, check=True, stdout=subprocess.DEVNULL)
    np.save(folder / "x.npy", np.zeros((1, 8, 8), dtype=np.float32))
    return {"node": str(node), "model": str(export / "model.onnx"), "input": str(folder / "x.npy")}


def _train_ids(node: str, count: int) -> list[int]:
    from common.nodes import NodeDirectory

    ids: list[int] = NodeDirectory.open(node).train().ids[:count].tolist()
    return ids


def measure(runs: int) -> dict[str, Any]:
    """Every command of COMMANDS, one warm-up and ``runs`` timed processes each."""
    env = dict(os.environ)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = _setup(Path(tmp), env)
        ids = iter(_train_ids(paths["node"], len(COMMANDS) * (runs + 1)))  # each forget files a new request
        for name, command in COMMANDS.items():
            samples = []
            for _ in range(runs + 1):
                values = {**paths, "id": str(next(ids))}
                samples.append(_run([arg.format(**values) for arg in command.argv], env))
            seconds, peaks = [s for s, _ in samples[1:]], [p for _, p in samples[1:]]
            results[name] = {
                "argv": list(command.argv), "loads": command.loads, "seconds": seconds, "peak_rss_mib": peaks,
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
        command = " ".join(["python -m simulations.bench_startup", *(argv if argv is not None else sys.argv[1:])])
        load = os.getloadavg()[0]
        atomic_write_json(args.out, {
            "commit": commit, "dirty": dirty, "command": command, "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "load_average": load, "runs": args.runs, "goal": GOAL,
            "commands": measure(args.runs),
        })
    args.out.with_suffix(".md").write_text(render(json.loads(args.out.read_text())))


if __name__ == "__main__":
    main()
