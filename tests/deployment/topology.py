"""The deployment topology, written once: what ``docker-compose.yml`` declares and the loopback test runs.

One SuperLink, three SuperNodes, and per node a one-shot ``fedunlearn node init``
and a forget-request endpoint (``fedunlearn node serve``). Every command line is a
template here; :func:`compose_argv` fills it with the paths and ports inside the
containers, :func:`loopback_argv` with temporary paths and free ports on 127.0.0.1.
``test_compose.py`` checks that the compose file says exactly what
:func:`expected_compose` derives from these templates, so the compose file and
the loopback test cannot drift apart.

Flags were checked against Flower 1.42.0's ``flower-superlink`` and
``flower-supernode`` (``--help`` and source):

* the SuperLink serves its Fleet, Control and Runtime APIs over HTTPS on one
  port (``--host``/``--port``; the ``--fleet-api-address``/``--control-api-address``
  flags of older releases are deprecated no-ops);
* TLS takes ``--ssl-ca-certfile``, ``--ssl-certfile`` and ``--ssl-keyfile`` (all
  three or none); the SuperNode trusts the CA with ``--root-certificates``;
* ``--isolation subprocess`` (the default, spelled out): the SuperLink starts the
  ServerApp and each SuperNode starts its ClientApp as child processes in the
  same container, so both images carry the app's dependencies;
* the SuperLink installs app dependencies at run time unless told not to
  (``--disable-runtime-dependency-installation``); the SuperNode never does by
  default. The images have them baked in;
* each SuperNode also serves a local Runtime API for its ClientApp processes on
  ``--host``/``--port`` (default 127.0.0.1:9094), so SuperNodes that share a
  loopback interface need distinct ports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CERT_FILES",
    "COMPOSE_PLACEMENT",
    "ENVIRONMENT",
    "FLWR_VERSION",
    "NODE_CONFIG_KEYS",
    "NUM_NODES",
    "SERVICES",
    "Mount",
    "Placement",
    "Service",
    "compose_argv",
    "expected_compose",
    "loopback_argv",
    "loopback_placement",
    "node_config",
    "service",
    "service_env",
]

FLWR_VERSION = "1.42.0"
NUM_NODES = 3
DATASET = "digits"
TRAIN_SIZE = 1000  # simulations/digits-deploy.toml's [data].train_size: the rest trains the audit's references
CERT_FILES = ("ca.crt", "server.crt", "server.key")  # what scripts/make-certs.sh writes (ca.key stays home)
NODE_CONFIG_KEYS = ("node-dir",)  # common.protocol.NODE_DIR
REQUEST_TOKEN_ENV = "FEDUNLEARN_REQUEST_TOKEN"

# Environment of every Flower process, in the containers and on loopback alike.
ENVIRONMENT: Mapping[str, str] = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
}

# Paths inside the containers (deploy/Dockerfile makes them, owned by the image's `app` user).
APP_DIR = "/app/fedunlearn"  # the repo's sources; the working directory of every service
CONTAINER_CERTS = "/app/certs"
CONTAINER_NODE_DIR = "/app/node"
CONTAINER_STATE = "/app/state"
CONTAINER_RUNS = "/app/runs"
SUPERLINK_PORT = 8000  # Flower's default
SUPERNODE_RUNTIME_PORT = 9094  # Flower's default
REQUEST_PORT = 50151  # `fedunlearn node serve`'s default


@dataclass(frozen=True)
class Mount:
    """A file or directory a service needs: a certificate from the certs dir, or a named volume."""

    kind: str  # "cert" (bind-mounted read-only from deploy/certs) or "volume"
    source: str  # certificate file name, or volume name
    target: str  # path inside the container

    @property
    def read_only(self) -> bool:
        return self.kind == "cert"


@dataclass(frozen=True)
class Service:
    name: str
    image: str  # build target in deploy/Dockerfile: "superlink" or "supernode"
    executable: str
    args: tuple[str, ...]  # templates, filled from a Placement with str.format
    node: int | None = None  # 1-based node number for per-node services
    mounts: tuple[Mount, ...] = ()
    published: tuple[tuple[int, int], ...] = ()  # compose only: (host port, container port)
    depends_on: Mapping[str, str] = field(default_factory=dict)  # service -> compose condition
    env: Mapping[str, str] = field(default_factory=dict)  # templates, on top of ENVIRONMENT
    one_shot: bool = False  # runs to completion before the services that depend on it start
    uses_image_entrypoint: bool = False  # executable is the image's ENTRYPOINT (flower-superlink/-supernode)


@dataclass(frozen=True)
class Placement:
    """Where the paths and ports a command names are: in the containers, or on loopback."""

    certs_dir: str
    state_dir: str
    superlink_host: str  # the address the SuperLink binds
    superlink_port: int
    superlink_address: str  # host:port the SuperNodes dial
    node_dirs: Mapping[int, str]
    runtime_ports: Mapping[int, int]  # each SuperNode's own Runtime API (its ClientApp processes dial it)
    request_host: str  # the interface the request endpoints bind
    request_ports: Mapping[int, int]
    request_token: str

    def values(self, node: int | None) -> dict[str, object]:
        values: dict[str, object] = {
            "certs": self.certs_dir,
            "state": self.state_dir,
            "superlink_host": self.superlink_host,
            "superlink_port": self.superlink_port,
            "superlink_address": self.superlink_address,
            "request_host": self.request_host,
            "request_token": self.request_token,
            "num_nodes": NUM_NODES,
            "dataset": DATASET,
            "train_size": TRAIN_SIZE,
        }
        if node is not None:
            values.update(
                node=node,
                partition=node - 1,  # NodeLayout.partition is 0-based: node 1 holds partition 0 of 3
                node_dir=self.node_dirs[node],
                runtime_port=self.runtime_ports[node],
                request_port=self.request_ports[node],
            )
        return values


def _superlink() -> Service:
    return Service(
        name="superlink",
        image="superlink",
        executable="flower-superlink",
        args=(
            "--ssl-ca-certfile", "{certs}/ca.crt",
            "--ssl-certfile", "{certs}/server.crt",
            "--ssl-keyfile", "{certs}/server.key",
            "--host", "{superlink_host}",
            "--port", "{superlink_port}",
            "--isolation", "subprocess",
            "--database", "{state}/state.db",
            "--disable-runtime-dependency-installation",
        ),
        mounts=(
            Mount("cert", "ca.crt", f"{CONTAINER_CERTS}/ca.crt"),
            Mount("cert", "server.crt", f"{CONTAINER_CERTS}/server.crt"),
            Mount("cert", "server.key", f"{CONTAINER_CERTS}/server.key"),
            Mount("volume", "superlink-state", CONTAINER_STATE),
            Mount("volume", "superlink-runs", CONTAINER_RUNS),
        ),
        published=((SUPERLINK_PORT, SUPERLINK_PORT),),
        uses_image_entrypoint=True,
    )


def _node_volume(i: int) -> Mount:
    return Mount("volume", f"node-{i}", CONTAINER_NODE_DIR)


def _node_init(i: int) -> Service:
    return Service(
        name=f"node-init-{i}",
        image="supernode",
        executable="fedunlearn",
        args=("node", "init", "--dataset", "{dataset}", "--train-size", "{train_size}",
              "--partition", "{partition}/{num_nodes}", "--node-dir", "{node_dir}"),
        node=i,
        mounts=(_node_volume(i),),
        one_shot=True,
    )


def _supernode(i: int) -> Service:
    return Service(
        name=f"supernode-{i}",
        image="supernode",
        executable="flower-supernode",
        args=(
            "--root-certificates", "{certs}/ca.crt",
            "--superlink", "{superlink_address}",
            "--isolation", "subprocess",
            "--host", "127.0.0.1",
            "--port", "{runtime_port}",
            "--node-config", "node-dir='{node_dir}'",
        ),
        node=i,
        mounts=(Mount("cert", "ca.crt", f"{CONTAINER_CERTS}/ca.crt"), _node_volume(i)),
        depends_on={"superlink": "service_started", f"node-init-{i}": "service_completed_successfully"},
        uses_image_entrypoint=True,
    )


def _requests(i: int) -> Service:
    return Service(
        name=f"requests-{i}",
        image="supernode",
        executable="fedunlearn",
        args=(
            "node", "serve", "--node-dir", "{node_dir}", "--host", "{request_host}", "--port", "{request_port}",
            "--tls-cert", "{certs}/server.crt", "--tls-key", "{certs}/server.key",
        ),
        env={REQUEST_TOKEN_ENV: "{request_token}"},  # not on the command line, where `ps` would show it
        node=i,
        mounts=(
            Mount("cert", "server.crt", f"{CONTAINER_CERTS}/server.crt"),
            Mount("cert", "server.key", f"{CONTAINER_CERTS}/server.key"),
            _node_volume(i),
        ),
        published=((REQUEST_PORT - 1 + i, REQUEST_PORT),),  # host 50151, 50152, 50153
        depends_on={f"node-init-{i}": "service_completed_successfully"},
    )


SERVICES: tuple[Service, ...] = (
    _superlink(),
    *(_node_init(i) for i in range(1, NUM_NODES + 1)),
    *(_supernode(i) for i in range(1, NUM_NODES + 1)),
    *(_requests(i) for i in range(1, NUM_NODES + 1)),
)


def service(name: str) -> Service:
    for s in SERVICES:
        if s.name == name:
            return s
    raise KeyError(name)


def _nodes() -> range:
    return range(1, NUM_NODES + 1)


COMPOSE_PLACEMENT = Placement(
    certs_dir=CONTAINER_CERTS,
    state_dir=CONTAINER_STATE,
    superlink_host="0.0.0.0",
    superlink_port=SUPERLINK_PORT,
    superlink_address=f"superlink:{SUPERLINK_PORT}",
    node_dirs={i: CONTAINER_NODE_DIR for i in _nodes()},
    runtime_ports={i: SUPERNODE_RUNTIME_PORT for i in _nodes()},
    request_host="0.0.0.0",
    request_ports={i: REQUEST_PORT for i in _nodes()},
    # docker compose fills this in from the environment or .env, and refuses to start without it
    request_token=f"${{{REQUEST_TOKEN_ENV}:?set {REQUEST_TOKEN_ENV} in the environment or .env}}",
)


def loopback_placement(root: Path, certs_dir: Path, ports: list[int], request_token: str) -> Placement:
    """Everything under ``root`` on 127.0.0.1; ``ports``: 1 + 2 * NUM_NODES free ports."""
    if len(ports) != 1 + 2 * NUM_NODES:
        raise ValueError(f"need {1 + 2 * NUM_NODES} ports, got {len(ports)}")
    return Placement(
        certs_dir=str(certs_dir),
        state_dir=str(root / "superlink"),
        superlink_host="127.0.0.1",
        superlink_port=ports[0],
        superlink_address=f"127.0.0.1:{ports[0]}",
        node_dirs={i: str(root / f"node-{i}") for i in _nodes()},
        runtime_ports={i: ports[i] for i in _nodes()},
        request_host="127.0.0.1",
        request_ports={i: ports[NUM_NODES + i] for i in _nodes()},
        request_token=request_token,
    )


def _fill(spec: Service, placement: Placement) -> list[str]:
    values = placement.values(spec.node)
    return [spec.executable, *(arg.format(**values) for arg in spec.args)]


def loopback_argv(spec: Service, placement: Placement) -> list[str]:
    """The process command line for the loopback test."""
    return _fill(spec, placement)


def service_env(spec: Service, placement: Placement) -> dict[str, str]:
    """The environment a service gets on top of the inherited one: ENVIRONMENT plus its own."""
    values = placement.values(spec.node)
    return {**ENVIRONMENT, **{k: v.format(**values) for k, v in spec.env.items()}}


def compose_argv(spec: Service) -> list[str]:
    """The command line inside the service's container (executable first)."""
    return _fill(spec, COMPOSE_PLACEMENT)


def node_config(argv: list[str]) -> dict[str, object]:
    """The parsed ``--node-config`` of a SuperNode command line (Flower's own parser)."""
    from flwr.common.config import parse_config_args

    return parse_config_args([argv[argv.index("--node-config") + 1]])


# --- the compose file, as derived from the templates ---------------------------------------------

IMAGE_NAMES = {"superlink": "fedunlearn-superlink:latest", "supernode": "fedunlearn-supernode:latest"}
DOCKERFILE = "deploy/Dockerfile"
CERTS_HOST_DIR = "./deploy/certs"
# The one-shot init must not fail when the volume already holds a node (a second `compose up`):
# sh -c '<guard>' fedunlearn node init ...   ($0 = fedunlearn, "$@" = the rest; $$ is compose's escape)
INIT_GUARD = ("/bin/sh", "-c", f'test -f {CONTAINER_NODE_DIR}/node.json || exec "$$0" "$$@"')


@dataclass(frozen=True)
class ComposeService:
    """The parts of a compose service the test compares, normalised."""

    image: str
    build_target: str
    entrypoint: list[str] | None  # None: the image's ENTRYPOINT
    command: list[str]
    mounts: frozenset[tuple[str, str, str, bool]]  # (type, source, target, read_only)
    ports: frozenset[tuple[int, int]]  # (published, target)
    depends_on: Mapping[str, str]
    environment: Mapping[str, str]
    restart: str | None


def _compose_mount(m: Mount) -> tuple[str, str, str, bool]:
    if m.kind == "cert":
        return ("bind", f"{CERTS_HOST_DIR}/{m.source}", m.target, m.read_only)
    return ("volume", m.source, m.target, m.read_only)


def expected_compose() -> dict[str, ComposeService]:
    """Every service of docker-compose.yml as the templates say it must be."""
    out: dict[str, ComposeService] = {}
    for spec in SERVICES:
        argv = compose_argv(spec)
        if spec.uses_image_entrypoint:
            entrypoint, command = None, argv[1:]
        elif spec.one_shot:
            entrypoint, command = [*INIT_GUARD, argv[0]], argv[1:]
        else:
            entrypoint, command = [argv[0]], argv[1:]
        out[spec.name] = ComposeService(
            image=IMAGE_NAMES[spec.image],
            build_target=spec.image,
            entrypoint=entrypoint,
            command=command,
            mounts=frozenset(_compose_mount(m) for m in spec.mounts),
            ports=frozenset(spec.published),
            depends_on=dict(spec.depends_on),
            environment=service_env(spec, COMPOSE_PLACEMENT),
            restart="no" if spec.one_shot else "unless-stopped",
        )
    return out


def named_volumes() -> set[str]:
    return {m.source for s in SERVICES for m in s.mounts if m.kind == "volume"}
