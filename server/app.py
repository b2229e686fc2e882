"""The fedunlearn ServerApp: reads the scenario, runs the federation, writes the run directory.

Run config keys (``[tool.flwr.app.config]``, ``flwr run --run-config``):
``scenario`` (TOML path), ``run-dir`` (output), ``nodes-root`` (simulation only:
where virtual nodes live; "none" in a deployment, where SuperNodes bring their
own node directories), and ``rounds`` / ``clients`` / ``device`` overrides
(``protocol.RUN_KEEP`` names the value that keeps the scenario's). Relative paths
resolve against the working directory, then against the project root.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedunlearn.common import protocol as P
from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.device import resolve_device
from fedunlearn.common.errors import ConfigError, FedUnlearnError
from fedunlearn.common.models import ModelSpec
from fedunlearn.common.scenario import Scenario, load_scenario
from fedunlearn.common.world import SimulatedWorld
from fedunlearn.server.edge_phase import EdgeContext
from fedunlearn.server.evaluation import CentralEvaluator, validation_evaluator
from fedunlearn.server.federation import Federation, settled_nodes, wait_for_nodes
from fedunlearn.server.messaging import Messenger
from fedunlearn.server.public_finetune import public_finetune
from fedunlearn.server.references import scenario_references
from fedunlearn.server.report import write_failure, write_run
from fedunlearn.server.run import Event, RunRecord, run_federation

__all__ = ["app", "create_server_app", "nodes_root", "resolve_path", "scenario_from_config"]

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(value: str) -> Path:
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path.resolve()
    return PROJECT_ROOT / path


def scenario_from_config(config: Mapping[str, Any]) -> Scenario:
    if not config.get(P.RUN_SCENARIO):
        raise ConfigError(f"run config needs {P.RUN_SCENARIO!r}: the path of a scenario TOML")
    scenario = load_scenario(resolve_path(str(config[P.RUN_SCENARIO])))
    device = _override(config, P.RUN_DEVICE)
    return scenario.with_overrides(clients=_count_override(config, P.RUN_CLIENTS),
                                   rounds=_count_override(config, P.RUN_ROUNDS), device=device)


def _override(config: Mapping[str, Any], key: str) -> str | None:
    """``key``'s run config value as text, or None where it keeps the scenario's (``P.RUN_KEEP``; the
    0 and "" that meant the same before still do, with a FutureWarning)."""
    value, keep = config.get(key, P.RUN_KEEP[key]), P.RUN_KEEP[key]
    if value in (0, "") and not isinstance(value, bool):
        warnings.warn(f"run config {key}={value!r} is deprecated and will be refused in the next release: "
                      f"write {key}={keep!r}", FutureWarning, stacklevel=2)
        return None
    return None if value == keep else str(value)


def _count_override(config: Mapping[str, Any], key: str) -> int | None:
    text = _override(config, key)
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"run config {key}={text!r}: give a whole number >= 1, or {P.RUN_KEEP[key]!r} to keep the "
                          "scenario's")
    return int(text)


def nodes_root(config: Mapping[str, Any]) -> Path | None:
    """Where a simulation's virtual nodes live; None in a deployment (``nodes-root = "none"``)."""
    text = _override(config, P.RUN_NODES_ROOT)
    return None if text is None else resolve_path(text)


def _federation_sized(grid: Grid, config: Mapping[str, Any]) -> Scenario:
    """The scenario of ``flwr run``; in its simulation (``nodes-root`` set, ``clients = "auto"``) the
    federation's ``num-supernodes`` decides how many clients there are."""
    scenario = scenario_from_config(config)
    if nodes_root(config) is not None and _override(config, P.RUN_CLIENTS) is None:
        nodes = settled_nodes(grid)
        log.info("simulation federation has %d nodes; the scenario runs with that many clients", len(nodes))
        scenario = scenario.with_overrides(clients=len(nodes))
    return scenario


def create_server_app(
    overrides: Mapping[str, Any] | None = None, *, scenario: Scenario | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> ServerApp:
    """A ServerApp; ``overrides`` replace run config keys and ``scenario``, when given, is the
    already-resolved scenario (the simulate command resolves it once); ``on_event`` reports progress."""
    fixed = dict(overrides or {})
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        config = {**context.run_config, **fixed}
        run_dir = resolve_path(str(config.get(P.RUN_DIR) or "runs/latest"))
        try:
            run(grid, scenario or _federation_sized(grid, config), config, run_dir, on_event)
        except FedUnlearnError as err:
            write_failure(run_dir, str(err))
            raise

    return server_app


def run(grid: Grid, scenario: Scenario, config: Mapping[str, Any], run_dir: Path,
        on_event: Callable[[Event], None] | None = None, *, world: SimulatedWorld | None = None) -> RunRecord:
    """Run the federation and write the run directory; ``world`` defaults to one under ``nodes-root``."""
    root = nodes_root(config)
    if world is None and root is not None:
        world = SimulatedWorld(scenario, root)
    bundle = world.bundle if world else load_dataset(scenario.data.dataset, root=scenario.data.data_dir,
                                                     seed=scenario.seed)
    if world is not None:
        world.materialise()
    channels, size, _ = bundle.input_shape
    spec = ModelSpec(scenario.federation.model, channels, size, bundle.num_classes)
    evaluator = CentralEvaluator(spec, bundle.test, resolve_device(scenario.federation.device))
    messenger = Messenger(grid, timeout=scenario.federation.round_timeout)
    nodes = wait_for_nodes(grid, scenario.federation.clients, scenario.federation.round_timeout)
    edge = EdgeContext(run_dir / "export", bundle, scenario.export, scenario.seed)
    references = scenario_references(scenario, spec, bundle, evaluator.device)
    record = run_federation(Federation(messenger, scenario, nodes), evaluator, spec,
                            after_round=world.file_due if world is not None else None,
                            on_event=on_event, edge=edge, references=references,
                            validation=validation_evaluator(scenario, spec, bundle, evaluator.device),
                            finetune=public_finetune(scenario, spec, bundle, evaluator.device))
    write_run(run_dir, scenario, spec, record, world=world, bundle=bundle)
    return record


app = create_server_app()
