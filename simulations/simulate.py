"""Run a scenario on Flower's Simulation Runtime (Ray backend) and return its report.

The runner resolves the scenario once, materialises one node directory per
virtual client under ``<run-dir>/nodes``, and hands the ServerApp and ClientApp
their settings directly (the Python simulation API carries no run config).
Each virtual client gets one CPU (and ``gpu_fraction`` of a GPU when the device
is CUDA); the ClientApp itself keeps torch to one thread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedunlearn.common import protocol as P
from fedunlearn.common.device import resolve_device
from fedunlearn.common.errors import FedUnlearnError
from fedunlearn.common.nodes.storage import atomic_write_json
from fedunlearn.common.scenario import Scenario
from fedunlearn.common.world import SimulatedWorld

__all__ = ["FLOWER_ENV", "default_run_dir", "simulate"]

FLOWER_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
}


def default_run_dir(scenario: Scenario) -> Path:
    return Path("runs") / f"{scenario.name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


def _backend_config(scenario: Scenario, gpu_fraction: float) -> dict[str, Any]:
    uses_gpu = resolve_device(scenario.federation.device).type == "cuda"
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": gpu_fraction if uses_gpu else 0.0},
        "init_args": {"num_cpus": os.cpu_count() or 1, "num_gpus": 1 if uses_gpu else 0},
    }


def simulate(scenario: Scenario, run_dir: Path, *, gpu_fraction: float = 0.25,
             on_event: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Run the scenario end to end; raises if the run failed (its report says why)."""
    for key, value in FLOWER_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("FLWR_HOME", str(Path(".flwr").resolve()))
    from flwr.simulation import run_simulation  # Ray is imported only when a simulation runs

    from fedunlearn.client.app import create_client_app
    from fedunlearn.server.app import create_server_app

    run_dir = run_dir.resolve()
    nodes_root = run_dir / "nodes"
    SimulatedWorld(scenario, nodes_root).materialise()
    atomic_write_json(run_dir / "scenario.json", asdict(scenario))
    fed = scenario.federation
    settings = {P.RUN_DIR: str(run_dir), P.RUN_NODES_ROOT: str(nodes_root)}
    (run_dir / "report.json").unlink(missing_ok=True)
    run_simulation(
        server_app=create_server_app(settings, scenario=scenario, on_event=on_event),
        client_app=create_client_app({P.RUN_NODES_ROOT: str(nodes_root)}),
        num_supernodes=fed.clients,
        backend_config=_backend_config(scenario, gpu_fraction),  # type: ignore[arg-type]
    )
    report_path = run_dir / "report.json"
    if not report_path.exists():
        raise FedUnlearnError(f"the simulation ended without a report in {run_dir}; see the log above")
    report = json.loads(report_path.read_text())
    if report.get("status") != "completed":
        raise FedUnlearnError(f"the simulation failed: {report.get('error', 'unknown error')}")
    return report
