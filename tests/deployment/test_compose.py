"""docker-compose.yml, deploy/Dockerfile and scripts/make-certs.sh say what topology.py says.

Docker does not run on our machines, so these checks are all we can do for the
compose file itself; test_loopback.py runs the same command lines as processes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedunlearn.common.scenario import load_scenario
from tests.deployment import topology as T

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / T.DOCKERFILE


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _strings(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        pytest.fail(f"use the list form, not a shell string: {value!r}")
    return [str(v) for v in value]


def _args(raw: dict[str, Any], key: str = "command") -> list[str]:
    return _strings(raw.get(key)) or []


def _mount(entry: Any) -> tuple[str, str, str, bool]:
    if isinstance(entry, str):  # short syntax: SOURCE:TARGET[:ro]
        parts = entry.split(":")
        source, target = parts[0], parts[1]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        return (kind, source, target, len(parts) > 2 and "ro" in parts[2].split(","))
    return (entry["type"], entry["source"], entry["target"], bool(entry.get("read_only", False)))


def _port(entry: Any) -> tuple[int, int]:
    published, _, target = str(entry).rpartition(":")
    return (int(published.rpartition(":")[2]), int(target.split("/")[0]))


def _depends_on(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):
        return {name: "service_started" for name in value}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in value.items()}


def _environment(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):
        return dict(str(item).split("=", 1) for item in value)
    return {str(k): str(v) for k, v in value.items()}


def _normalised(name: str, raw: dict[str, Any]) -> T.ComposeService:
    build = raw.get("build") or {}
    assert build.get("dockerfile") == T.DOCKERFILE, f"{name}: build.dockerfile"
    assert build.get("context") == ".", f"{name}: build.context"
    restart = raw.get("restart")
    return T.ComposeService(
        image=raw.get("image", ""),
        build_target=build.get("target", ""),
        entrypoint=_strings(raw.get("entrypoint")),
        command=_strings(raw.get("command")) or [],
        mounts=frozenset(_mount(v) for v in raw.get("volumes", [])),
        ports=frozenset(_port(p) for p in raw.get("ports", [])),
        depends_on=_depends_on(raw.get("depends_on")),
        environment=_environment(raw.get("environment")),
        restart=None if restart is None else str(restart),
    )


def test_compose_has_exactly_the_topology_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {s.name for s in T.SERVICES}
    assert {"superlink", "supernode-1", "supernode-2", "supernode-3"} <= set(compose["services"])


@pytest.mark.parametrize("name", [s.name for s in T.SERVICES])
def test_each_service_matches_the_topology(compose: dict[str, Any], name: str) -> None:
    actual = _normalised(name, compose["services"][name])
    expected = T.expected_compose()[name]
    # field by field, so a failure names what drifted
    for field in ("image", "build_target", "entrypoint", "command", "mounts", "ports", "depends_on",
                  "environment", "restart"):
        assert getattr(actual, field) == getattr(expected, field), f"{name}: {field} differs from topology.py"


def test_named_volumes_are_declared_and_one_per_node(compose: dict[str, Any]) -> None:
    assert set(compose.get("volumes") or {}) == T.named_volumes()
    node_volumes = {}
    for i in range(1, T.NUM_NODES + 1):
        mounts = {_mount(v) for v in compose["services"][f"supernode-{i}"]["volumes"]}
        (volume,) = [m for m in mounts if m[0] == "volume"]
        node_volumes[i] = volume[1]
        # init and the request endpoint work on the very same volume
        for other in (f"node-init-{i}", f"requests-{i}"):
            assert volume in {_mount(v) for v in compose["services"][other]["volumes"]}, other
    assert len(set(node_volumes.values())) == T.NUM_NODES, "each SuperNode needs its own node volume"


@pytest.mark.parametrize("i", range(1, T.NUM_NODES + 1))
def test_node_config_points_at_the_node_volume(compose: dict[str, Any], i: int) -> None:
    raw = compose["services"][f"supernode-{i}"]
    config = T.node_config(["flower-supernode", *_args(raw)])
    assert tuple(config) == T.NODE_CONFIG_KEYS
    mounts = {_mount(v) for v in raw["volumes"]}
    (node_mount,) = [m for m in mounts if m[0] == "volume"]
    assert config["node-dir"] == node_mount[2]
    init = _args(compose["services"][f"node-init-{i}"])
    assert init[init.index("--node-dir") + 1] == node_mount[2]
    assert init[init.index("--partition") + 1] == f"{i - 1}/{T.NUM_NODES}"


def test_every_path_a_command_names_is_mounted(compose: dict[str, Any]) -> None:
    roots = (T.CONTAINER_CERTS, T.CONTAINER_NODE_DIR, T.CONTAINER_STATE, T.CONTAINER_RUNS)
    for name, raw in compose["services"].items():
        targets = [m[2] for m in (_mount(v) for v in raw.get("volumes", []))]
        args = _args(raw)
        for arg in args:
            for path in re.findall(r"/app/[\w./-]+", arg):
                assert path.startswith(roots), f"{name}: {path} is outside the mounted dirs"
                assert any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets), (
                    f"{name}: {path} is not on a mount"
                )


def test_tls_everywhere(compose: dict[str, Any]) -> None:
    for name, raw in compose["services"].items():
        args = _args(raw)
        assert "--insecure" not in args, name
    link = _args(compose["services"]["superlink"])
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile"):
        assert flag in link
    for i in range(1, T.NUM_NODES + 1):
        assert "--root-certificates" in (_args(compose["services"][f"supernode-{i}"]))
        serve = _args(compose["services"][f"requests-{i}"])
        assert "--tls-cert" in serve and "--tls-key" in serve
        assert "--token" not in serve  # the token comes from the environment, out of `ps` and `docker inspect` args
        env = _environment(compose["services"][f"requests-{i}"].get("environment"))
        assert env[T.REQUEST_TOKEN_ENV].startswith("${" + T.REQUEST_TOKEN_ENV + ":?")  # required, never a default


def test_supernodes_dial_the_superlink_service_on_its_port(compose: dict[str, Any]) -> None:
    link = _args(compose["services"]["superlink"])
    port = link[link.index("--port") + 1]
    assert link[link.index("--host") + 1] == "0.0.0.0"  # reachable from the other containers
    for i in range(1, T.NUM_NODES + 1):
        node = _args(compose["services"][f"supernode-{i}"])
        assert node[node.index("--superlink") + 1] == f"superlink:{port}"


def test_loopback_and_compose_differ_only_in_paths_and_ports(tmp_path: Path) -> None:
    placement = T.loopback_placement(tmp_path, tmp_path / "certs", list(range(20000, 20007)), "token")
    for spec in T.SERVICES:
        compose_argv, loopback_argv = T.compose_argv(spec), T.loopback_argv(spec, placement)
        assert len(compose_argv) == len(loopback_argv), spec.name
        flags = [(a, b) for a, b in zip(compose_argv, loopback_argv, strict=True) if a.startswith("-")]
        assert all(a == b for a, b in flags), spec.name
        if spec.name.startswith("supernode-"):
            assert tuple(T.node_config(loopback_argv)) == T.NODE_CONFIG_KEYS
    node_dirs = {placement.node_dirs[i] for i in range(1, T.NUM_NODES + 1)}
    runtime_ports = {placement.runtime_ports[i] for i in range(1, T.NUM_NODES + 1)}
    assert len(node_dirs) == len(runtime_ports) == T.NUM_NODES


def _dockerfile_stages() -> dict[str, dict[str, Any]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        if m := re.match(r"FROM (\S+) AS (\w+)$", line):
            base = re.sub(r"\$\{(\w+)\}", lambda g: args[g.group(1)], m.group(1))
            current = stages.setdefault(m.group(2), {"base": base})
        elif current is not None and (m := re.match(r"(WORKDIR|ENTRYPOINT) (.+)$", line)):
            current[m.group(1)] = m.group(2)
    return stages


def test_dockerfile_extends_the_pinned_flower_images() -> None:
    stages = _dockerfile_stages()
    assert set(stages) == {"superlink", "supernode"}
    for target, stage in stages.items():
        repository, _, tag = stage["base"].partition(":")
        assert repository == f"flwr/{target}"
        assert tag.startswith(f"{T.FLWR_VERSION}-") and "alpine" not in tag, tag  # torch has no musl wheels
        assert stage["WORKDIR"] == T.APP_DIR
        entrypoint = stage["ENTRYPOINT"]
        users = {s.executable for s in T.SERVICES if s.image == target and s.uses_image_entrypoint}
        assert users == {f"flower-{target}"}
        assert entrypoint == f'["flower-{target}"]'


def test_installed_flower_is_the_pinned_version() -> None:
    from importlib.metadata import version

    assert version("flwr") == T.FLWR_VERSION


def test_make_certs_covers_every_name_the_services_are_dialled_by() -> None:
    script = (REPO / "scripts" / "make-certs.sh").read_text(encoding="utf-8")
    for f in T.CERT_FILES:
        assert f in script
    assert "DNS:localhost" in script and "IP:127.0.0.1" in script and "DNS:superlink" in script
    assert 'DNS:requests-$i' in script and 'DNS:supernode-$i' in script
    assert f"for i in {' '.join(str(i) for i in range(1, T.NUM_NODES + 1))}; do" in script


def test_nodes_are_cut_as_the_deployment_scenario_says() -> None:
    """The server refuses nodes whose layout differs from the scenario (server/federation.py): keep them equal."""
    assert load_scenario(REPO / "simulations" / "digits-deploy.toml").data.train_size == T.TRAIN_SIZE
