"""The forget-request gRPC service over real loopback sockets: filing, reading back, refusals, auth, TLS."""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedunlearn.client import request_service
from fedunlearn.client.proto import forget_requests_pb2 as pb
from fedunlearn.client.proto import forget_requests_pb2_grpc as pb_grpc
from fedunlearn.client.request_service import (
    MAX_PAGE_SIZE,
    RemoteRequestError,
    RequestClient,
    UnauthenticatedError,
    start_request_server,
)
from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.data.tensors import DatasetBundle
from fedunlearn.common.errors import ConfigError, DataError, RequestError
from fedunlearn.common.nodes import NodeDirectory, NodeLayout, materialise_node

TOKEN = "s3cret-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
SUMMARY_FIELDS = {"request_id", "kind", "num_samples", "target_class", "reason", "status", "rejection",
                  "created_at", "updated_at", "receipt", "deferral"}


@pytest.fixture(scope="module")
def digits() -> DatasetBundle:
    return load_dataset("digits")


@pytest.fixture
def node(tmp_path: Path, digits: DatasetBundle) -> NodeDirectory:
    return materialise_node(tmp_path / "n0", digits, NodeLayout("digits", 0, 5))


@pytest.fixture
def served(node: NodeDirectory) -> Iterator[str]:
    """A plaintext loopback server with a token; yields its target."""
    server, port = start_request_server(node.path, port=0, host="127.0.0.1", token=TOKEN, insecure=True)
    yield f"127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture
def client(served: str) -> Iterator[RequestClient]:
    with RequestClient(served, token=TOKEN, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (and 127.0.0.1) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


def _recorded(node: NodeDirectory) -> list[str]:
    return [r.request_id for r in NodeDirectory.open(node.path).ledger.list()]


@pytest.mark.parametrize("kind", ["ids", "class", "all"])
def test_submit_files_a_pending_request_in_the_ledger(
    client: RequestClient, node: NodeDirectory, kind: str,
) -> None:
    train = node.train()
    if kind == "ids":
        reply, expected = client.submit(ids=train.ids[:3].tolist(), reason="GDPR #1"), 3
    elif kind == "class":
        cls = int(train.y[0])
        reply, expected = client.submit(target_class=cls, reason="GDPR #1"), int((train.y == cls).sum())
    else:
        reply, expected = client.submit(everything=True, reason="GDPR #1"), len(train)
    assert set(reply) == SUMMARY_FIELDS
    assert (reply["kind"], reply["num_samples"], reply["status"], reply["reason"]) == (
        kind, expected, "pending", "GDPR #1")
    assert reply["target_class"] == (int(train.y[0]) if kind == "class" else None)
    stored = NodeDirectory.open(node.path).ledger.get(reply["request_id"])
    assert stored.summary() == {k: v for k, v in reply.items() if k != "receipt"}


def test_status_and_list_read_back_the_ledger(client: RequestClient, node: NodeDirectory) -> None:
    ids = node.train().ids.tolist()
    first = client.submit(ids=ids[:2], reason="a")
    second = client.submit(ids=ids[2:5], reason="b")
    assert client.status(first["request_id"]) == first
    assert [r["request_id"] for r in client.list()] == [first["request_id"], second["request_id"]]
    assert len(client.list("pending")) == 2 and client.list("committed") == []

    NodeDirectory.open(node.path).commit([first["request_id"]], {"method": "remi"})
    committed = client.status(first["request_id"])
    assert committed["status"] == "committed"
    assert committed["receipt"]["method"] == "remi" and committed["receipt"]["num_samples"] == 2
    assert [r["request_id"] for r in client.list("committed")] == [first["request_id"]]
    with pytest.raises(RemoteRequestError, match="status must be one of") as err:
        client.list("bogus")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_replies_cannot_carry_sample_ids(client: RequestClient, node: NodeDirectory, served: str) -> None:
    fields = pb.RequestSummary.DESCRIPTOR.fields
    assert {f.name for f in fields} == SUMMARY_FIELDS
    assert not any(f.is_repeated for f in fields)
    assert [f.name for f in pb.ListResponse.DESCRIPTOR.fields] == ["requests", "next_page_token"]
    ids = node.train().ids[:4].tolist()
    filed = client.submit(ids=ids, reason="x")
    with grpc.insecure_channel(served) as channel:
        raw = pb_grpc.ForgetRequestsStub(channel).Status(
            pb.StatusRequest(request_id=filed["request_id"]), metadata=AUTH)
    assert {f.name for f, _ in raw.ListFields()} <= SUMMARY_FIELDS - {"target_class", "rejection", "receipt"}
    assert raw.num_samples == len(ids)


@pytest.mark.parametrize(("submit", "code", "message"), [
    ({"ids": [10**9]}, grpc.StatusCode.INVALID_ARGUMENT, "not training samples of this node"),
    ({"ids": []}, grpc.StatusCode.INVALID_ARGUMENT, "names no sample ids"),
    ({"target_class": 99}, grpc.StatusCode.INVALID_ARGUMENT, "class must be in"),
    ({"everything": True, "reason": "  "}, grpc.StatusCode.INVALID_ARGUMENT, "needs a reason"),
])
def test_bad_submissions_are_refused_and_not_recorded(
    client: RequestClient, node: NodeDirectory, submit: dict, code: grpc.StatusCode, message: str,
) -> None:
    with pytest.raises(RemoteRequestError, match=message) as err:
        client.submit(**{"reason": "r", **submit})
    assert err.value.code == code
    assert isinstance(err.value, RequestError)
    assert _recorded(node) == []


@pytest.mark.parametrize("target", [{}, {"everything": False}])
def test_a_submission_without_target_is_refused(served: str, node: NodeDirectory, target: dict) -> None:
    with grpc.insecure_channel(served) as channel, pytest.raises(grpc.RpcError) as err:
        pb_grpc.ForgetRequestsStub(channel).Submit(
            pb.SubmitRequest(reason="r", **target), metadata=AUTH)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "exactly one target" in err.value.details()
    assert _recorded(node) == []


def test_a_hand_made_submission_whose_reason_is_not_utf8_is_refused_and_not_recorded(
    served: str, node: NodeDirectory
) -> None:
    """Protobuf strings must be UTF-8: a client cannot build such a message, but raw bytes can claim one
    (field 3 everything = true, field 4 reason = 0xff 0xfe). gRPC refuses it before the service sees it."""
    raw = bytes([0x18, 0x01, 0x22, 0x02, 0xFF, 0xFE])
    with grpc.insecure_channel(served) as channel, pytest.raises(grpc.RpcError) as err:
        submit = channel.unary_unary("/fedunlearn.requests.v1.ForgetRequests/Submit",
                                     request_serializer=lambda body: body,
                                     response_deserializer=pb.RequestSummary.FromString)
        submit(raw, metadata=AUTH, timeout=10)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert _recorded(node) == []


def test_duplicate_is_already_exists_and_not_recorded(client: RequestClient, node: NodeDirectory) -> None:
    ids = node.train().ids[:3].tolist()
    first = client.submit(ids=ids, reason="a")
    with pytest.raises(RemoteRequestError, match=first["request_id"]) as err:
        client.submit(ids=ids[1:], reason="again")
    assert err.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert _recorded(node) == [first["request_id"]]


def test_unknown_request_is_not_found(client: RequestClient) -> None:
    with pytest.raises(RemoteRequestError, match="no request 'req-nope'") as err:
        client.status("req-nope")
    assert err.value.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("token", [None, "wrong", "s3cret-toke", TOKEN + "x"])
def test_calls_without_the_right_token_are_unauthenticated(
    served: str, node: NodeDirectory, token: str | None,
) -> None:
    with RequestClient(served, token=token, timeout=10) as bad:
        with pytest.raises(UnauthenticatedError, match="bearer token") as err:
            bad.submit(ids=node.train().ids[:2].tolist(), reason="r")
        assert isinstance(err.value, PermissionError) and isinstance(err.value, RequestError)
        with pytest.raises(UnauthenticatedError):
            bad.list()
    assert _recorded(node) == []


def test_token_needs_the_bearer_scheme(served: str, node: NodeDirectory) -> None:
    with grpc.insecure_channel(served) as channel, pytest.raises(grpc.RpcError) as err:
        pb_grpc.ForgetRequestsStub(channel).Submit(
            pb.SubmitRequest(everything=True, reason="r"), metadata=(("authorization", f"Basic {TOKEN}"),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _recorded(node) == []


def test_tls_with_token(node: NodeDirectory, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server, port = start_request_server(node.path, port=0, host="127.0.0.1", token=TOKEN,
                                        tls_cert=cert, tls_key=key)
    try:
        with RequestClient(f"localhost:{port}", token=TOKEN, root_cert=cert.read_bytes(), timeout=10) as tls:
            filed = tls.submit(ids=node.train().ids[:2].tolist(), reason="over TLS")
            assert tls.status(filed["request_id"])["num_samples"] == 2
        with RequestClient(f"localhost:{port}", root_cert=cert.read_bytes(), timeout=10) as anonymous, \
                pytest.raises(UnauthenticatedError):
            anonymous.list()
        with RequestClient(f"127.0.0.1:{port}", token=TOKEN, timeout=5) as plaintext, \
                pytest.raises(grpc.RpcError) as err:
            plaintext.list()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(None)
    assert len(_recorded(node)) == 1


@pytest.mark.parametrize(("drop", "missing"), [
    ("tls_cert", "TLS certificate"), ("tls_key", "TLS private key"), ("token", "bearer token"),
])
def test_refuses_to_start_without_tls_and_token(
    node: NodeDirectory, tls_files: tuple[Path, Path], drop: str, missing: str,
) -> None:
    cert, key = tls_files
    settings: dict = {"token": TOKEN, "tls_cert": cert, "tls_key": key, drop: None}
    with pytest.raises(ConfigError, match=missing) as err:
        start_request_server(node.path, port=0, host="127.0.0.1", **settings)
    assert "--insecure" in str(err.value)


def test_start_checks_its_inputs(node: NodeDirectory, tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="--insecure turns TLS off"):
        start_request_server(node.path, port=0, insecure=True, tls_cert=tls_files[0], tls_key=tls_files[1])
    with pytest.raises(DataError, match="not a node directory"):
        start_request_server(tmp_path / "empty", port=0, host="127.0.0.1", token=TOKEN, insecure=True)
    with pytest.raises(ConfigError, match="cannot read the TLS"):
        start_request_server(node.path, port=0, host="127.0.0.1", token=TOKEN,
                             tls_cert=tmp_path / "nope.pem", tls_key=tls_files[1])


def _other_key(path: Path) -> Path:
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


@pytest.mark.parametrize("damage", ["garbage certificate", "garbage key", "key of another certificate"])
def test_a_bad_pem_file_is_reported_as_such(node: NodeDirectory, tmp_path: Path, tls_files: tuple[Path, Path],
                                            damage: str) -> None:
    cert, key = tls_files
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    cert, key = {"garbage certificate": (garbage, key), "garbage key": (cert, garbage),
                 "key of another certificate": (cert, _other_key(tmp_path / "other.key"))}[damage]
    with pytest.raises(ConfigError, match="not a usable TLS certificate and private key") as err:
        start_request_server(node.path, port=0, token=TOKEN, tls_cert=cert, tls_key=key)
    assert "is the port taken" not in str(err.value)


def test_insecure_still_needs_a_token(node: NodeDirectory) -> None:
    with pytest.raises(ConfigError, match=r"needs a bearer token .*--allow-unauthenticated"):
        start_request_server(node.path, port=0, token=None, insecure=True)
    with pytest.raises(ConfigError, match="--allow-unauthenticated accepts calls without a token, yet a token"):
        start_request_server(node.path, port=0, token=TOKEN, insecure=True, allow_unauthenticated=True)


def test_allow_unauthenticated_serves_anyone_and_says_so(node: NodeDirectory,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fedunlearn.client.request_service"):
        server, port = start_request_server(node.path, port=0, insecure=True, allow_unauthenticated=True)
    try:
        with RequestClient(f"127.0.0.1:{port}", timeout=10) as anyone:
            assert anyone.submit(target_class=int(node.train().y[0]), reason="r")["kind"] == "class"
    finally:
        server.stop(None)
    assert any("anyone who reaches 127.0.0.1" in r.getMessage() for r in caplog.records)


def _listening(port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses with a socket listening on ``port``, from Linux's /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            pytest.skip("needs Linux's /proc/net/tcp")
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
                ip = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
                found.add(ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip)
    return found


def test_the_server_listens_on_loopback_unless_told_otherwise(node: NodeDirectory) -> None:
    server, port = start_request_server(node.path, port=0, token=TOKEN, insecure=True)
    try:
        assert _listening(port) == {ipaddress.ip_address("127.0.0.1")}  # not 0.0.0.0 or ::
        with RequestClient(f"127.0.0.1:{port}", token=TOKEN, timeout=10) as local:
            assert local.list() == []
    finally:
        server.stop(None)


def test_a_plaintext_server_on_a_public_interface_warns(node: NodeDirectory,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fedunlearn.client.request_service"):
        server, _ = start_request_server(node.path, port=0, host="0.0.0.0", token=TOKEN, insecure=True)
    server.stop(None)
    assert any("cross the network unencrypted" in r.getMessage() for r in caplog.records)


def test_client_refuses_ambiguous_targets_locally(client: RequestClient, node: NodeDirectory) -> None:
    with pytest.raises(RequestError, match="exactly one"):
        client.submit(ids=[1], target_class=0, reason="r")
    assert _recorded(node) == []


def test_a_damaged_node_is_failed_precondition(client: RequestClient, node: NodeDirectory) -> None:
    (node.path / "node.json").unlink()
    with pytest.raises(RemoteRequestError, match=r"node\.json") as err:
        client.submit(everything=True, reason="r")
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_a_taken_port_is_refused(served: str, node: NodeDirectory) -> None:
    """grpc shares ports by default (SO_REUSEPORT): two nodes would split each other's requests."""
    port = int(served.rsplit(":", 1)[1])
    with pytest.raises(ConfigError, match="is the port taken"):
        start_request_server(node.path, port=port, host="127.0.0.1", token=TOKEN, insecure=True)


# --- bounds: reasons, pages, echoed input ---------------------------------------------------------------


def _file_directly(node: NodeDirectory, count: int, reason: str) -> list[str]:
    """``count`` pending requests written straight into the ledger in one transaction (fast, and the way
    rows filed before the reason bound existed look)."""
    rows = [(f"req-{i:016x}", 10**6 + i) for i in range(count)]  # listing never looks at the samples
    with sqlite3.connect(node.ledger.path) as db:
        db.executemany("INSERT INTO requests VALUES (?, 'ids', NULL, ?, 'pending', NULL, NULL, ?, ?, NULL)",
                       [(rid, reason, f"2026-01-01T00:00:{i // 1000:02d}.{i % 1000:03d}", "t")
                        for i, (rid, _) in enumerate(rows)])
        db.executemany("INSERT INTO request_samples VALUES (?, ?)", rows)
    return [rid for rid, _ in rows]


def test_an_oversized_reason_is_refused(client: RequestClient, node: NodeDirectory) -> None:
    with pytest.raises(RemoteRequestError, match="more than 1000") as err:
        client.submit(everything=True, reason="x" * 2_000_000)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and len(str(err.value)) < 300
    assert _recorded(node) == []


def test_list_keeps_working_after_many_large_reasons(client: RequestClient, node: NodeDirectory) -> None:
    """1200 reasons of 1000 four-byte characters: 4.8 MB, more than one gRPC message may carry."""
    filed = _file_directly(node, 1200, "\U0001d4e7" * 1000)
    assert [r["request_id"] for r in client.list()] == filed
    assert [r["request_id"] for r in client.list("pending", page_size=7)] == filed


def test_list_pages(served: str, node: NodeDirectory) -> None:
    filed = _file_directly(node, 5, "r")
    with grpc.insecure_channel(served) as channel:
        stub = pb_grpc.ForgetRequestsStub(channel)
        first = stub.List(pb.ListRequest(page_size=2), metadata=AUTH)
        second = stub.List(pb.ListRequest(page_size=2, page_token=first.next_page_token), metadata=AUTH)
        last = stub.List(pb.ListRequest(page_size=2, page_token=second.next_page_token), metadata=AUTH)
        huge = stub.List(pb.ListRequest(page_size=10**9), metadata=AUTH)
        for bad, message in ((pb.ListRequest(page_size=-1), "page_size must be >= 0"),
                             (pb.ListRequest(page_token="req-" + "0" * 100_000), "names no request"),
                             (pb.ListRequest(status="x" * 100_000), "status must be one of")):
            with pytest.raises(grpc.RpcError) as err:
                stub.List(bad, metadata=AUTH)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details()
            assert len(err.value.details()) < 300
    assert [r.request_id for page in (first, second, last) for r in page.requests] == filed
    assert last.next_page_token == "" and len(huge.requests) == 5 and huge.next_page_token == ""
    assert MAX_PAGE_SIZE * 10_000 < request_service.PAGE_BYTES * 4  # a full page of worst-case rows fits 4 MiB


def test_a_page_ends_early_at_its_byte_budget(client: RequestClient, served: str, node: NodeDirectory,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    filed = _file_directly(node, 6, "é" * 1000)
    monkeypatch.setattr(request_service, "PAGE_BYTES", 5000)  # about two summaries of 2 kB
    with grpc.insecure_channel(served) as channel:
        page = pb_grpc.ForgetRequestsStub(channel).List(pb.ListRequest(page_size=100), metadata=AUTH)
    assert len(page.requests) == 2 and page.next_page_token == filed[1]
    assert [r["request_id"] for r in client.list()] == filed


def test_a_huge_unknown_id_is_still_not_found(client: RequestClient) -> None:
    with pytest.raises(RemoteRequestError, match="no request 'req-xxx") as err:
        client.status("req-" + "x" * 1_000_000)
    assert err.value.code == grpc.StatusCode.NOT_FOUND and len(str(err.value)) < 300


# --- reads, locks, logs --------------------------------------------------------------------------------------


def test_reads_neither_wait_for_the_node_lock_nor_load_samples(
    client: RequestClient, served: str, node: NodeDirectory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    filed = client.submit(ids=node.train().ids[:2].tolist(), reason="r")
    monkeypatch.setattr("fedunlearn.common.nodes.directory.read_samples",
                        lambda *a, **k: pytest.fail("a read loaded the samples"))
    with (node.path / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a trainer purging right now
        with RequestClient(served, token=TOKEN, timeout=3) as quick:
            assert quick.status(filed["request_id"])["status"] == "pending"
            assert [r["request_id"] for r in quick.list()] == [filed["request_id"]]


def test_submit_checks_the_sample_index_and_follows_a_purge(
    client: RequestClient, node: NodeDirectory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    train = node.train()
    first = client.submit(ids=train.ids[:2].tolist(), reason="r")
    NodeDirectory.open(node.path).commit([first["request_id"]], {"method": "remi"})  # a new sample file and index
    k = int(train.y[2])
    monkeypatch.setattr("fedunlearn.common.nodes.directory.read_samples",
                        lambda *a, **k: pytest.fail("Submit loaded samples"))
    with pytest.raises(RemoteRequestError, match="not training samples") as err:
        client.submit(ids=train.ids[:1].tolist(), reason="r")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert client.submit(target_class=k, reason="r")["num_samples"] == int((train.y[2:] == k).sum())
    assert client.submit(everything=True, reason="r")["num_samples"] == int((train.y[2:] != k).sum())


def test_calls_are_logged_with_the_caller_never_the_token(
    served: str, node: NodeDirectory, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="fedunlearn.client.request_service"):
        with RequestClient(served, token=TOKEN, timeout=10) as c:
            filed = c.submit(ids=node.train().ids[:3].tolist(), reason="private reason")
            c.list()
        with RequestClient(served, token="wrong-token", timeout=10) as bad, pytest.raises(UnauthenticatedError):
            bad.list()
    lines = [r.getMessage() for r in caplog.records]
    assert any(f"filed {filed['request_id']} (ids, 3 samples)" in line and "127.0.0.1" in line for line in lines)
    assert any("List from ipv4:127.0.0.1" in line for line in lines)
    assert any("UNAUTHENTICATED" in line and "127.0.0.1" in line for line in lines)
    assert not any(secret in line for line in lines for secret in (TOKEN, "wrong-token", "private reason"))
