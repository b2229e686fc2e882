"""A gRPC door onto a node's forget-request ledger, its bearer-token guard, and a small client.

An organisation's systems (a DSAR portal, a CRM) file "delete my data" requests
with a node without shell access to it. The node directory stays the single
source of truth: every call reads the SQLite ledger afresh (and ``Submit``
node.json, under the node's shared lock), so the service sees what the CLI and
the training loop wrote. ``Submit`` checks ids against the node's sample index,
never the samples; the parsed index is kept per index file, and a purge writes a
new file, so nothing cached can go stale. Reads (``Status``, ``List``) touch only
the ledger, whose WAL lets them run while a trainer commits; the node's repairs
happen once, when the server starts.
Responses are request summaries: sample ids never leave the node, only their
count does.

Everything a caller sends is bounded: reasons by the ledger, ``List`` by pages
(at most MAX_PAGE_SIZE requests and about PAGE_BYTES), and error details, which
repeat caller input only clipped, so no reply can outgrow gRPC's limits.

Errors the caller can fix come back as ``INVALID_ARGUMENT`` (bad target, empty
or oversized reason, bad page), ``ALREADY_EXISTS`` (samples already under a live
request), ``NOT_FOUND`` (unknown request id), ``FAILED_PRECONDITION`` (the node
directory is damaged) and ``UNAUTHENTICATED``, always with the reason as details
and nothing recorded. Every call is logged with the caller's address; never the
token, the reason or sample ids.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import ssl
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import grpc

from fedunlearn.client.proto import forget_requests_pb2 as pb
from fedunlearn.client.proto import forget_requests_pb2_grpc as pb_grpc
from fedunlearn.common.errors import ConfigError, FedUnlearnError, RequestError
from fedunlearn.common.nodes import ForgetRequest, NodeDirectory, NodeRecords, RequestStatus
from fedunlearn.common.nodes.text import clip

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "BearerTokenInterceptor",
    "ForgetRequestService",
    "RemoteRequestError",
    "RequestClient",
    "UnauthenticatedError",
    "start_request_server",
]

log = logging.getLogger(__name__)

Summary = dict[str, Any]
Summaries = list[Summary]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
PAGE_BYTES = 1 << 20  # a List reply stays far below gRPC's default 4 MiB receive limit
_MAX_DETAILS = 1000  # details travel in a trailer; grpc's default metadata limit is 8 KiB

_CALLER_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                  grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION}
_DUPLICATE_WORDING = "already under"  # how common/nodes words "samples held by a live request"
_STATUSES = ", ".join(s.value for s in RequestStatus)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    if len(message) > _MAX_DETAILS:  # a last bound: messages clip what they repeat, but paths can be long
        message = message[:_MAX_DETAILS] + "..."
    level = logging.INFO if code in _CALLER_ERRORS else logging.WARNING  # bad tokens and failures stand out
    log.log(level, "refused a call from %s: %s, %s", context.peer(), code.name, message)  # never the token
    context.abort(code, message)
    raise AssertionError("grpc's abort returned")  # it always raises; this keeps type checkers honest


@contextmanager
def _translated(context: grpc.ServicerContext, *, missing_request: bool = False) -> Iterator[None]:
    """Turn the project's errors into gRPC statuses whose details tell the caller what to fix."""
    try:
        yield
    except RequestError as err:
        if missing_request:
            code = grpc.StatusCode.NOT_FOUND
        elif _DUPLICATE_WORDING in str(err):
            code = grpc.StatusCode.ALREADY_EXISTS
        else:
            code = grpc.StatusCode.INVALID_ARGUMENT
        _abort(context, code, str(err))
    except FedUnlearnError as err:  # DataError and kin: the node is damaged, not the caller's input
        _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(err))
    except Exception:  # never leak internals (paths, ids) in the details of an unexpected failure
        log.exception("forget-request call from %s failed", context.peer())
        _abort(context, grpc.StatusCode.INTERNAL, "internal error on the node; its log has the details")


def _summary_message(request: ForgetRequest) -> pb.RequestSummary:
    """Built from ``summary()`` only, so nothing beyond it (the sample ids) can slip into a reply."""
    fields = {k: v for k, v in request.summary().items() if v is not None}
    if request.receipt is not None:
        fields["receipt"] = json.dumps(dict(request.receipt), sort_keys=True)
    return pb.RequestSummary(**fields)


def _submit_target(request: pb.SubmitRequest, context: grpc.ServicerContext) -> dict[str, Any]:
    which = request.WhichOneof("target")
    if which == "sample_ids":
        return {"ids": list(request.sample_ids.ids)}
    if which == "class_id":
        return {"target_class": request.class_id}
    if which == "everything" and request.everything:
        return {"everything": True}
    _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
           "give exactly one target: sample_ids, class_id, or everything=true; nothing was recorded")


def _page(found: Sequence[ForgetRequest], limit: int) -> pb.ListResponse:
    """At most ``limit`` of ``found`` (which holds one more when more follow) and at most ~PAGE_BYTES."""
    reply = pb.ListResponse()
    size = 0
    for request in found[:limit]:
        message = _summary_message(request)
        size += message.ByteSize()
        if reply.requests and size > PAGE_BYTES:
            break
        reply.requests.append(message)
    if len(reply.requests) < len(found):
        reply.next_page_token = reply.requests[-1].request_id
    return reply


class ForgetRequestService(pb_grpc.ForgetRequestsServicer):
    """Servicer for one opened node directory; keeps no state of its own, so any worker thread may serve any call.

    ``submit`` re-reads node.json under the node's shared lock and checks the ids against the sample
    index it names (parsed once per index file); the ledger opens SQLite per call.
    """

    def __init__(self, node: NodeRecords) -> None:
        self.node = node

    def Submit(self, request: pb.SubmitRequest, context: grpc.ServicerContext) -> pb.RequestSummary:
        target = _submit_target(request, context)
        with _translated(context):
            filed = self.node.submit(**target, reason=request.reason)
        log.info("Submit from %s: filed %s (%s, %d samples)", context.peer(), filed.request_id, filed.kind,
                 len(filed.sample_ids))
        return _summary_message(filed)

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.RequestSummary:
        if not request.request_id:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "request_id is empty")
        with _translated(context, missing_request=True):
            found = self.node.ledger.get(request.request_id)
        log.info("Status from %s: %s is %s", context.peer(), found.request_id, found.status.value)
        return _summary_message(found)

    def List(self, request: pb.ListRequest, context: grpc.ServicerContext) -> pb.ListResponse:
        status = None
        if request.HasField("status"):
            if request.status not in {s.value for s in RequestStatus}:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                       f"status must be one of {_STATUSES}, got {clip(request.status)}")
            status = RequestStatus(request.status)
        if request.page_size < 0:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"page_size must be >= 0, got {request.page_size}")
        limit = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        with _translated(context):
            found = self.node.ledger.list(status, after=request.page_token or None, limit=limit + 1)
        reply = _page(found, limit)
        log.info("List from %s: %d request(s)%s", context.peer(), len(reply.requests),
                 ", more follow" if reply.next_page_token else "")
        return reply


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Refuses any call without ``authorization: Bearer <token>`` before it reaches the ledger."""

    def __init__(self, token: str) -> None:
        if not token.strip():
            raise ConfigError("the bearer token is empty")
        self._expected = token.encode()
        self._deny = grpc.unary_unary_rpc_method_handler(self._refuse)

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        if self._authorised(handler_call_details.invocation_metadata):
            return continuation(handler_call_details)
        return self._deny

    def _authorised(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
        values = [v for k, v in metadata or () if k == "authorization"]
        if len(values) != 1 or not isinstance(values[0], str):
            return False
        scheme, _, given = values[0].partition(" ")
        # compare_digest: the time taken must not tell an attacker how much of a guess was right
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._expected)

    @staticmethod
    def _refuse(request: Any, context: grpc.ServicerContext) -> NoReturn:
        _abort(context, grpc.StatusCode.UNAUTHENTICATED,
               "missing or wrong bearer token; send metadata 'authorization: Bearer <token>'")


def _check_security(token: str | None, tls_cert: Path | None, tls_key: Path | None, insecure: bool,
                    allow_unauthenticated: bool) -> None:
    """Deletion requests are personal data and irreversible: plaintext or anonymous only when asked by name."""
    if insecure and (tls_cert is not None or tls_key is not None):
        raise ConfigError("--insecure turns TLS off, yet a TLS cert/key was given; drop one or the other")
    if allow_unauthenticated and token:
        raise ConfigError("--allow-unauthenticated accepts calls without a token, yet a token was given "
                          "(--token or $FEDUNLEARN_REQUEST_TOKEN); drop one or the other")
    wanted = [("a bearer token (--token)", bool(token and token.strip()) or allow_unauthenticated)]
    if not insecure:
        wanted = [("a TLS certificate (--tls-cert)", tls_cert is not None),
                  ("a TLS private key (--tls-key)", tls_key is not None), *wanted]
    missing = [name for name, given in wanted if not given]
    if missing:
        raise ConfigError(f"the request server needs {', '.join(missing)}; for local testing only, --insecure "
                          "serves plaintext and --allow-unauthenticated accepts calls without a token")


def _no_password() -> bytes:
    return b""  # an encrypted key fails to load instead of prompting on a terminal nobody watches


def _tls_credentials(cert: Path, key: Path) -> grpc.ServerCredentials:
    """PEM certificate and key, checked with the ssl module first: grpc would only fail when binding."""
    try:
        pair = (Path(key).read_bytes(), Path(cert).read_bytes())
    except OSError as err:
        raise ConfigError(f"cannot read the TLS certificate or key: {err}") from err
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as err:
        raise ConfigError(f"{cert} and {key} are not a usable TLS certificate and private key ({err}); give "
                          "a PEM certificate and its own unencrypted PEM key, e.g. from scripts/make-certs.sh"
                          ) from err
    return grpc.ssl_server_credentials([pair])


def _bind(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        bound = (server.add_insecure_port(address) if credentials is None
                 else server.add_secure_port(address, credentials))
    except RuntimeError as err:  # newer grpcio raises instead of returning 0
        raise ConfigError(f"cannot listen on {address} ({err}); is the port taken, or the address not "
                          "one of this machine's?") from err
    if bound == 0:
        raise ConfigError(f"cannot listen on {address}; is the port taken?")
    return bound


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def start_request_server(
    node_dir: Path, *, port: int, host: str = "127.0.0.1", token: str | None = None,
    tls_cert: Path | None = None, tls_key: Path | None = None, insecure: bool = False,
    allow_unauthenticated: bool = False, max_workers: int = 4,
) -> tuple[grpc.Server, int]:
    """Serve ForgetRequests for ``node_dir``; returns the started server and its port (port 0 = any free).

    Loopback only unless ``host`` says otherwise; TLS unless ``insecure``; a token unless
    ``allow_unauthenticated``. Each relaxation is logged as a warning.
    """
    _check_security(token, tls_cert, tls_key, insecure, allow_unauthenticated)
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be in 0..65535, got {port}")
    node = NodeDirectory.open(node_dir)  # refuse a non-node (DataError), finish any purge a crash left
    credentials = None if insecure else _tls_credentials(tls_cert, tls_key)  # type: ignore[arg-type]
    interceptors = [] if allow_unauthenticated else [BearerTokenInterceptor(str(token))]
    # so_reuseport off: grpc's default lets a second node's server share the port and split the calls
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), interceptors=interceptors,
                         options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_ForgetRequestsServicer_to_server(ForgetRequestService(node), server)
    bound = _bind(server, f"{host}:{port}", credentials)
    server.start()
    log.info("forget-request service for %s on %s:%d (%s, %s)", node.path, host, bound,
             "plaintext" if insecure else "TLS", "NO token" if allow_unauthenticated else "token required")
    if allow_unauthenticated:
        log.warning("--allow-unauthenticated: anyone who reaches %s:%d can file and read forget requests",
                    host, bound)
    if insecure and not _is_loopback(host):
        log.warning("--insecure on %s: requests%s cross the network unencrypted", host,
                    "" if allow_unauthenticated else " and the token")
    return server, bound


class RemoteRequestError(RequestError):
    """The node refused a call; ``code`` is the gRPC status, the message is the node's reason."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


class UnauthenticatedError(RemoteRequestError, PermissionError):
    """Missing or wrong token: a RequestError for the CLI, a PermissionError for generic callers."""



def _summary_dict(message: pb.RequestSummary) -> Summary:
    """The same keys as ``ForgetRequest.summary()``, plus ``receipt`` (a dict once committed)."""
    out: Summary = {f: getattr(message, f) for f in
                    ("request_id", "kind", "num_samples", "reason", "status", "created_at", "updated_at")}
    for optional in ("target_class", "rejection", "deferral"):
        out[optional] = getattr(message, optional) if message.HasField(optional) else None
    out["receipt"] = json.loads(message.receipt) if message.HasField("receipt") else None
    return out


class RequestClient:
    """Dict-returning client for scripts and tests.

    ``root_cert`` (PEM bytes) turns TLS on; without it the channel is plaintext,
    for a server started with ``insecure=True``. Refusals raise
    :class:`RemoteRequestError` (a ``RequestError``), a bad token
    :class:`UnauthenticatedError` (also a ``PermissionError``); transport
    failures (``UNAVAILABLE``, deadline) stay ``grpc.RpcError``.
    """

    def __init__(self, target: str, *, token: str | None = None, root_cert: bytes | None = None,
                 timeout: float = 30.0) -> None:
        credentials = None if root_cert is None else grpc.ssl_channel_credentials(root_certificates=root_cert)
        self._channel = (grpc.insecure_channel(target) if credentials is None
                         else grpc.secure_channel(target, credentials))
        self._stub = pb_grpc.ForgetRequestsStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout

    def __enter__(self) -> RequestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            code, details = err.code(), err.details()  # type: ignore[attr-defined]
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise UnauthenticatedError(details, code) from err
            if code in _CALLER_ERRORS:
                raise RemoteRequestError(details, code) from err
            raise

    def submit(self, *, ids: Sequence[int] | None = None, target_class: int | None = None,
               everything: bool = False, reason: str) -> Summary:
        """File a request; exactly one target, as with ``NodeDirectory.submit``."""
        if sum((ids is not None, target_class is not None, everything)) != 1:
            raise RequestError("give exactly one of: sample ids, a class, or everything")
        request = pb.SubmitRequest(reason=reason)
        if ids is not None:
            request.sample_ids.ids.extend(int(i) for i in ids)
            request.sample_ids.SetInParent()  # an empty id list must still select the sample_ids target
        elif target_class is not None:
            request.class_id = target_class
        else:
            request.everything = True
        return _summary_dict(self._call(self._stub.Submit, request))

    def status(self, request_id: str) -> Summary:
        return _summary_dict(self._call(self._stub.Status, pb.StatusRequest(request_id=request_id)))

    def list(self, status: str | None = None, *, page_size: int = 0) -> Summaries:
        """Every request (of ``status``), following the node's pages; ``page_size`` 0: the node's default."""
        found: Summaries = []
        token = ""
        while True:
            reply = self._call(self._stub.List, pb.ListRequest(status=status, page_size=page_size, page_token=token))
            found += [_summary_dict(m) for m in reply.requests]
            token = reply.next_page_token
            if not token:
                return found
