"""Scenario files (TOML) resolved once into typed plans; errors name the TOML path and the fix.

A scenario says what data the federation holds, how it trains, how it
unlearns and gates, which baselines run beside it, and (simulation only)
which forget requests are filed after which round.
"""

from __future__ import annotations

import tomllib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from fedunlearn.common.audit.gate import GateConfig
from fedunlearn.common.data.datasets import DATASETS
from fedunlearn.common.data.forget import parse_forget_spec
from fedunlearn.common.data.partition import parse_partitioner
from fedunlearn.common.edge.plan import ExportPlan
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import MODELS
from fedunlearn.common.training import TrainConfig
from fedunlearn.common.unlearning import METHODS, parse_params
from fedunlearn.common.unlearning.projected_ascent import PROJECTED_ASCENT

__all__ = ["FEDERATED_METHOD_DEFAULTS", "AuditPlan", "BaselinePlan", "DataPlan", "ExportPlan", "FederationPlan",
           "Scenario", "ScheduledRequest", "UnlearningPlan", "load_scenario", "parse_scenario"]

T = TypeVar("T")
TAG_PREFIX = "tag:"


@dataclass(frozen=True)
class DataPlan:
    dataset: str = "digits"
    partitioner: str = "dirichlet:0.5"
    holdout_fraction: float = 0.2
    train_size: int | None = None
    data_dir: str | None = None
    # simulations: partition (as a TOML key) -> share of its samples given a systematically wrong label,
    # tagged "mislabeled" on the node (forget = "tag:mislabeled" files a request for them)
    mislabeled: Mapping[str, float] = field(default_factory=dict)

    def mislabeled_share(self, partition: int) -> float:
        return float(self.mislabeled.get(str(partition), 0.0))


@dataclass(frozen=True)
class FederationPlan:
    clients: int = 5
    rounds: int = 30
    model: str = "cnn"
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    device: str = "auto"
    round_timeout: float = 600.0
    update_clip: float = 3.0  # a training update's norm is clipped to this multiple of the round's median (0: off)

    def recipe(self) -> TrainConfig:
        """The local training recipe: constant lr within a round, a fresh optimizer each round."""
        return TrainConfig(epochs=self.local_epochs, batch_size=self.batch_size, lr=self.lr,
                           optimizer=self.optimizer, schedule="constant")  # type: ignore[arg-type]


# What every federation wants of a method beyond its centralised defaults. ReMI stops on its own client's
# audit, but the server's gate pools several clients and sees smaller effects than one client can, so each
# client aims tighter than its own noise floor (noise_z 0.5, not 2); and a client whose audit stops
# improving for 3 checks returns its best point (a small forget set sits in its own noise).
FEDERATED_METHOD_DEFAULTS: Mapping[str, Mapping[str, Any]] = {"remi": {"noise_z": 0.5, "patience": 3}}


@dataclass(frozen=True)
class UnlearningPlan:
    """update_clip: an unlearning update is added to the global model in full, so its norm is bounded by
    this multiple of the round's largest training update (0: no bound). params: what the scenario sets
    beyond the federated defaults (``method_params``). step_scales: the shares of the round's unlearning
    steps the server may apply, largest first; it applies the largest whose model loses at most
    ``max_step_drop`` points of accuracy against the original on validation images no client holds
    (``(1.0,)``: always all of it, no search). public_finetune_images: after each unlearning round the
    server fine-tunes the model on this many other images no client holds, ``public_finetune_epochs``
    epochs of Adam at ``public_finetune_lr``, the whole model or (``public_finetune_scope = "top"``) only neck
    and head (None: off; ``server/public_finetune.py`` says why).
    train_beside: every node trains on its retain data in an unlearning round, beside the requesters' method
    (the default); false: the round is the requesters' method alone, each step bounded by the run's last own
    training round, and only the server's fine-tuning and repair rounds train (``server/aggregate.py``)."""

    method: str = "remi"
    max_rounds: int = 3
    max_attempts: int = 2
    params: Mapping[str, Any] = field(default_factory=dict)
    update_clip: float = 4.0
    step_scales: tuple[float, ...] = (1.0,)
    max_step_drop: float = 1.0
    public_finetune_images: int | None = None
    public_finetune_epochs: int = 2
    public_finetune_lr: float = 5e-4
    public_finetune_scope: Literal["all", "top"] = "all"
    train_beside: bool = True

    def __post_init__(self) -> None:
        scales = tuple(float(s) for s in self.step_scales)
        object.__setattr__(self, "step_scales", scales)
        if not scales or any(not 0 < s <= 1 for s in scales) or list(scales) != sorted(scales, reverse=True):
            raise ConfigError(f"step_scales must be shares in (0, 1], largest first, got {list(scales)}")
        if not 0 < self.max_step_drop < 100:
            raise ConfigError(f"max_step_drop must be in (0, 100) points, got {self.max_step_drop}")
        if self.public_finetune_scope not in ("all", "top"):
            raise ConfigError(f"public_finetune_scope must be 'all' or 'top', got {self.public_finetune_scope!r}")
        if self.public_finetune_images is not None and self.public_finetune_images < 1:
            raise ConfigError(f"public_finetune_images must be >= 1 (leave it out for no fine-tuning), "
                              f"got {self.public_finetune_images}")
        try:
            self.public_finetune_recipe()
        except ConfigError as err:
            raise ConfigError(f"public_finetune: {err}") from err

    @property
    def searches_steps(self) -> bool:
        return self.step_scales != (1.0,)

    def public_finetune_recipe(self) -> TrainConfig:
        """How the server fine-tunes each unlearning round's model on public images, when it does."""
        return TrainConfig(epochs=self.public_finetune_epochs, batch_size=64, lr=self.public_finetune_lr,
                           optimizer="adam", schedule="constant")

    def method_params(self) -> dict[str, Any]:
        """The parameters the requesters run the method with: the federated defaults, then the scenario's."""
        return {**FEDERATED_METHOD_DEFAULTS.get(self.method, {}), **self.params}


@dataclass(frozen=True)
class BaselinePlan:
    """The baselines each phase is judged beside (docs/baselines.md). FedEraser stores the training updates
    of every ``federaser_interval``-th round (0: off) and calibrates them with ``federaser_calibration_ratio``
    of the local epochs; ``pga`` runs projected gradient ascent on the requesters (ball radius a share of
    the global model's norm, SGD step ``pga_lr``, ``pga_max_steps`` steps at most), then
    ``pga_finetune_rounds`` FedAvg rounds."""

    federated_retrain: bool = True
    federated_finetune_rounds: int = 2
    federaser_interval: int = 0
    federaser_calibration_ratio: float = 0.5
    pga: bool = False
    pga_radius: float = 0.05
    pga_lr: float = 0.01
    pga_max_steps: int = 100
    pga_finetune_rounds: int = 1

    def __post_init__(self) -> None:
        if self.federaser_interval < 0:
            raise ConfigError(f"federaser_interval must be >= 0 rounds (0: FedEraser off), "
                              f"got {self.federaser_interval}")
        if not 0 < self.federaser_calibration_ratio <= 1:
            raise ConfigError(f"federaser_calibration_ratio must be in (0, 1] (a share of the local epochs), "
                              f"got {self.federaser_calibration_ratio}")
        if self.pga_finetune_rounds < 0:
            raise ConfigError(f"pga_finetune_rounds must be >= 0, got {self.pga_finetune_rounds}")
        for key, value in self.pga_params().items():  # the ascent's own checks, named by this table's key
            try:
                parse_params(PROJECTED_ASCENT, {key: value})
            except ConfigError as err:
                raise ConfigError(f"pga_{key}: {err}") from err

    def pga_params(self) -> dict[str, Any]:
        """The hyper-parameters the requesters' projected ascent is sent (its own checks apply)."""
        return {"radius": self.pga_radius, "lr": self.pga_lr, "max_steps": self.pga_max_steps}


@dataclass(frozen=True)
class AuditPlan:
    """The gate's reference models (LiRA, RMIA): ``reference_models`` of the federation's architecture,
    trained once by the server on data no client holds, each on ``reference_size`` samples (default: as
    many as the federation trains on) for ``reference_epochs`` epochs (default: the federation's rounds x
    local epochs, at most 20) with the federation's local recipe. ``lent_test_images``: a sample-level audit
    also compares each forget set with up to this many of the server's test images, those the node keeps
    matching its forget set's class mix (``common.audit.exemplars``): more non-members than a node's sealed
    hold-out, so a smaller leak is detectable. Only where the test images are like the clients' unseen
    samples: never beside mislabeled forget sets, which only hold-out samples mislabeled the same way match."""

    reference_models: int = 8
    reference_epochs: int | None = None
    reference_size: int | None = None
    lent_test_images: int | None = None

    def __post_init__(self) -> None:
        if self.reference_models < 2:
            raise ConfigError(f"reference_models must be >= 2 (LiRA estimates their spread), "
                              f"got {self.reference_models}")
        for name in ("reference_epochs", "reference_size", "lent_test_images"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 or unset, got {value}")


@dataclass(frozen=True)
class ScheduledRequest:
    """A request the simulation files on a node after training round ``round``.

    partition: a partition id, or "all" (class requests: every partition holding the class).
    forget: "random:F", "class:K", "ids:1,2,...", "tag:NAME" (the node's samples carrying a tag, e.g.
        "tag:mislabeled"), or "all" (the node leaves).
    """

    round: int
    partition: int | str
    forget: str
    reason: str = "simulated data-subject request"


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    data: DataPlan
    federation: FederationPlan
    unlearning: UnlearningPlan
    gate: GateConfig
    baselines: BaselinePlan
    # the edge export after the gate; the server calibrates static int8 on its own test images (at most half
    # the split, the rest measures the artifacts' accuracy)
    export: ExportPlan = field(default_factory=ExportPlan)
    audit: AuditPlan = field(default_factory=AuditPlan)
    requests: tuple[ScheduledRequest, ...] = ()

    def with_overrides(self, *, clients: int | None = None, rounds: int | None = None,
                       device: str | None = None, seed: int | None = None) -> Scenario:
        """Command-line overrides, validated like the file."""
        fed = self.federation
        fed = replace(fed, clients=clients if clients is not None else fed.clients,
                      rounds=rounds if rounds is not None else fed.rounds,
                      device=device if device is not None else fed.device)
        return _validated(replace(self, federation=fed, seed=seed if seed is not None else self.seed))


_SECTIONS: dict[str, type] = {"data": DataPlan, "federation": FederationPlan, "unlearning": UnlearningPlan,
                              "gate": GateConfig, "baselines": BaselinePlan, "export": ExportPlan,
                              "audit": AuditPlan}


# Old spellings, accepted for one release: [gate] shared these names with ReMI's stopping targets in
# [unlearning.params], which mean something else and have other defaults.
_RENAMED = {"gate": {"auc_tolerance": "auc_margin", "accuracy_band": "accuracy_margin"}}


def _renamed(table: dict[str, Any], path: str) -> dict[str, Any]:
    """``table`` with its old key spellings replaced by the current ones, each with a warning."""
    renames = {old: new for old, new in _RENAMED.get(path, {}).items() if old in table}
    for old, new in renames.items():
        if new in table:
            raise ConfigError(f"[{path}] sets both {old} and {new}; {old} is the old name of {new}")
        warnings.warn(f"[{path}].{old} is now [{path}].{new}; the old name goes in the next release",
                      FutureWarning, stacklevel=4)
    return {renames.get(key, key): value for key, value in table.items()}


def _build(cls: type, table: Any, path: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{path}] must be a table")
    table = _renamed(table, path)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"[{path}] has unknown key(s) {', '.join(unknown)}; valid: {', '.join(known)}")
    missing = [name for name, f in known.items()
               if f.default is MISSING and f.default_factory is MISSING and name not in table]
    if missing:
        raise ConfigError(f"[{path}] is missing key(s) {', '.join(missing)}")
    for key, value in table.items():
        expected = known[key].type
        if not _fits(value, str(expected)):
            raise ConfigError(f"[{path}].{key} must be {expected}, got {value!r}")
    try:
        return cls(**table)
    except ConfigError as err:
        raise ConfigError(f"[{path}]: {err}") from err


def _fits(value: Any, annotation: str) -> bool:
    """Loose type check against the dataclass annotation's text (TOML has few types)."""
    # the outer type of each alternative: "Mapping[str, Any]" -> Mapping (not str), "int | None" -> int, None
    alternatives = {part.strip().split("[", 1)[0] for part in annotation.split("|")}
    if value is None:
        return "None" in alternatives
    checks = {"int": isinstance(value, int) and not isinstance(value, bool),
              "float": isinstance(value, int | float) and not isinstance(value, bool),
              "str": isinstance(value, str), "bool": isinstance(value, bool),
              "Mapping": isinstance(value, dict), "Int8Mode": isinstance(value, str),  # the plan parses it
              "Literal": isinstance(value, str),  # of strings; the plan checks which
              "tuple": isinstance(value, list) and all(
                  isinstance(item, int | float) and not isinstance(item, bool) if "tuple[float" in annotation
                  else isinstance(item, str) for item in value)}
    return any(ok for name, ok in checks.items() if name in alternatives)


def parse_scenario(document: Mapping[str, Any], *, source: str = "<scenario>") -> Scenario:
    unknown = sorted(set(document) - {"scenario", "requests", *_SECTIONS})
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}")
    head = document.get("scenario", {})
    if not isinstance(head, dict) or not isinstance(head.get("name"), str):
        raise ConfigError(f"{source}: [scenario].name must be a string, e.g. name = \"digits-sample\"")
    seed = head.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"{source}: [scenario].seed must be an integer, got {seed!r}")
    parts = {name: _build(cls, document.get(name, {}), name) for name, cls in _SECTIONS.items()}
    raw_requests = document.get("requests", [])
    if not isinstance(raw_requests, list):
        raise ConfigError(f"{source}: requests must be an array of tables ([[requests]])")
    requests = tuple(_build(ScheduledRequest, r, f"requests[{i}]") for i, r in enumerate(raw_requests))
    return _validated(Scenario(name=head["name"], seed=seed, requests=requests, **parts))


def _validated(scenario: Scenario) -> Scenario:
    data, fed, unl = scenario.data, scenario.federation, scenario.unlearning
    _at("[data].dataset", lambda: DATASETS.get(data.dataset))
    _at("[federation].model", lambda: MODELS.get(fed.model))
    _at("[unlearning].method", lambda: METHODS.get(unl.method))
    _at("[data].partitioner", lambda: parse_partitioner(data.partitioner))
    _at("[unlearning].params", lambda: parse_params(unl.method, unl.method_params()))
    _at("[federation]", fed.recipe)
    for key in ("clients", "rounds", "local_epochs"):
        if getattr(fed, key) < 1:
            raise ConfigError(f"[federation].{key} must be >= 1, got {getattr(fed, key)}")
    if fed.round_timeout <= 0:
        raise ConfigError(f"[federation].round_timeout must be > 0 seconds, got {fed.round_timeout}")
    if not (fed.update_clip == 0 or fed.update_clip >= 1):
        raise ConfigError(f"[federation].update_clip must be 0 (no bound) or >= 1 (a multiple of the round's median "
                          f"update norm), got {fed.update_clip}")
    if unl.max_rounds < 1 or unl.max_attempts < 1:
        raise ConfigError("[unlearning].max_rounds and max_attempts must be >= 1")
    if not unl.update_clip >= 0:
        raise ConfigError(f"[unlearning].update_clip must be >= 0 (0: no bound), got {unl.update_clip}")
    for key, share in data.mislabeled.items():
        if not (key.isdigit() and int(key) < fed.clients) or not isinstance(share, int | float) or not 0 <= share < 1:
            raise ConfigError(f"[data.mislabeled] maps partitions 0..{fed.clients - 1} to shares in [0, 1), "
                              f"got {key} = {share!r}")
    if data.mislabeled and scenario.audit.lent_test_images:
        raise ConfigError("[audit].lent_test_images: the server's test images are not like mislabeled forget sets "
                          "(only hold-out samples mislabeled the same way are); leave it out beside [data.mislabeled]")
    if scenario.baselines.federated_finetune_rounds < 0:
        raise ConfigError("[baselines].federated_finetune_rounds must be >= 0")
    for i, request in enumerate(scenario.requests):
        _check_request(request, fed, f"requests[{i}]")
    return scenario


def _check_request(request: ScheduledRequest, fed: FederationPlan, path: str) -> None:
    if not 1 <= request.round < fed.rounds:
        raise ConfigError(f"[{path}].round must be in 1..{fed.rounds - 1} (filed between rounds), "
                          f"got {request.round}")
    if request.partition != "all" and not (
        isinstance(request.partition, int) and 0 <= request.partition < fed.clients
    ):
        raise ConfigError(f"[{path}].partition must be in 0..{fed.clients - 1} or \"all\", got {request.partition!r}")
    if request.forget.startswith(TAG_PREFIX):
        if request.partition == "all":
            raise ConfigError(f"[{path}]: a tag request names one partition, not \"all\"")
    elif request.forget != "all":
        spec = _at(f"[{path}].forget", lambda: parse_forget_spec(request.forget))
        if request.partition == "all" and spec.kind != "class":
            raise ConfigError(f"[{path}]: partition = \"all\" only fits class requests (forget = \"class:K\")")


def _at(path: str, check: Callable[[], T]) -> T:
    """Run a check whose error does not know where in the file the value came from; prefix the TOML path."""
    try:
        return check()
    except ConfigError as err:
        raise type(err)(f"{path}: {err}") from err


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"scenario file {path} does not exist; see simulations/*.toml") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"scenario file {path} is not valid TOML: {err}") from err
    return parse_scenario(document, source=str(path))
