"""Keep each finished seed of a bench on disk, so that a long run stopped part way resumes where it was.

A seed's ``SeedRun`` (its models, audits, references and data, without the dataset's training split, which
the dataset gives back) is pickled to ``<dir>/seed-<s>.pt`` beside the configuration that made it.
``--resume`` restores a seed only when that configuration matches the run's in everything a seed's run
depends on (``SEED_INDEPENDENT`` lists what it does not: how many seeds, U-LiRA, the edge exports).
Each file names the commit that made it, and bench.json lists the seeds taken back with theirs. The files
are pickles: restore only your own.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from fedunlearn.common.files import atomic_write_bytes
from fedunlearn.simulations.bench import BenchConfig, SeedRun
from fedunlearn.simulations.bench_report import config_dict

__all__ = ["SEED_INDEPENDENT", "SeedCheckpoints"]

# configuration fields a seed's own run does not read
SEED_INDEPENDENT = ("seeds", "ulira_shadows", "edge", "edge_int8", "edge_repeats")


def _fingerprint(config: BenchConfig) -> dict[str, Any]:
    resolved = config_dict(config)
    return json.loads(json.dumps({k: v for k, v in resolved.items() if k not in SEED_INDEPENDENT}))


class SeedCheckpoints:
    """``<folder>/seed-<s>.pt`` per finished seed; ``restore`` only with ``resume``. ``provenance``: the
    commit (and whether the worktree was dirty) of the code running now, stored with every seed kept;
    ``restored``: seed -> the commit and dirtiness of each seed taken back, which bench.json records,
    as code may have changed between the sittings of one run."""

    def __init__(self, folder: Path, config: BenchConfig, *, resume: bool, provenance: tuple[str, bool]) -> None:
        self.folder, self.fingerprint, self.resume = folder, _fingerprint(config), resume
        self.provenance = provenance
        self.restored: dict[int, dict[str, Any]] = {}

    def _path(self, seed: int) -> Path:
        return self.folder / f"seed-{seed}.pt"

    def keep(self, run: SeedRun) -> None:
        """Write the seed, its dataset's training split left out (the largest part, and not the seed's own)."""
        bundle = run.data.bundle
        slim = replace(run, data=replace(run.data, bundle=replace(bundle, train=bundle.train.subset(torch.arange(0)))))
        buffer = io.BytesIO()
        commit, dirty = self.provenance
        torch.save({"config": self.fingerprint, "commit": commit, "dirty": dirty, "run": slim}, buffer)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self._path(run.seed), buffer.getvalue())  # a stopped write leaves no half a seed

    def restore(self, seed: int) -> SeedRun | None:
        """The seed's run if resuming and a checkpoint of this configuration is there, else None."""
        path = self._path(seed)
        if not (self.resume and path.is_file()):
            return None
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("config") != self.fingerprint:
            return None
        run: SeedRun = saved["run"]
        self.restored[seed] = {"commit": saved["commit"], "dirty": saved["dirty"]}
        return run
