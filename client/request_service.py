"""A gRPC door onto a node's forget-request ledger, its bearer-token guard, and a small client.

An organisation's systems (a DSAR portal, a CRM) file "delete my data" requests
with a node without shell access to it. The node directory stays the single
source of truth: every call reads ``node.json`` and the SQLite ledger afresh, so
the service sees what the CLI and the training loop wrote, and caches nothing
that could go stale. Responses are request summaries: sample ids never leave
the node, only their count does.

Repairs (finishing purges, removing unreferenced data files) and reads are
serialised by the node directory's own file lock, so opening the directory per
call is safe while a trainer commits in another process.

Errors the caller can fix come back as ``INVALID_ARGUMENT`` (bad target, empty
reason), ``ALREADY_EXISTS`` (samples already under a live request), ``NOT_FOUND``
(unknown request id), ``FAILED_PRECONDITION`` (the node directory is damaged) and
``UNAUTHENTICATED``, always with the reason as details and nothing recorded.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import grpc

from client.proto import forget_requests_pb2 as pb
from client.proto import forget_requests_pb2_grpc as pb_grpc
from common.errors import ConfigError, FedUnlearnError, RequestError
from common.nodes import ForgetRequest, NodeDirectory, RequestStatus

__all__ = [
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

_DUPLICATE_WORDING = "already under"  # how common/nodes words "samples held by a live request"
_STATUSES = ", ".join(s.value for s in RequestStatus)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
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
        log.exception("forget-request call failed")
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


class ForgetRequestService(pb_grpc.ForgetRequestsServicer):
    """Servicer for one node directory; stateless, so any worker thread may serve any call."""

    def __init__(self, node_dir: Path) -> None:
        self.node_dir = Path(node_dir)

    def _node(self) -> NodeDirectory:
        """Opened per call so every call sees the durable ledger (repairs are lock-protected)."""
        return NodeDirectory.open(self.node_dir)

    def Submit(self, request: pb.SubmitRequest, context: grpc.ServicerContext) -> pb.RequestSummary:
        target = _submit_target(request, context)
        with _translated(context):
            filed = self._node().submit(**target, reason=request.reason)
        log.info("filed %s (%s, %d samples) for %s", filed.request_id, filed.kind, len(filed.sample_ids),
                 context.peer())
        return _summary_message(filed)

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.RequestSummary:
        if not request.request_id:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "request_id is empty")
        with _translated(context, missing_request=True):
            found = self._node().ledger.get(request.request_id)
        return _summary_message(found)

    def List(self, request: pb.ListRequest, context: grpc.ServicerContext) -> pb.ListResponse:
        status = None
        if request.HasField("status"):
            if request.status not in {s.value for s in RequestStatus}:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                       f"status must be one of {_STATUSES}, got {request.status!r}")
            status = RequestStatus(request.status)
        with _translated(context):
            found = self._node().ledger.list(status)
        return pb.ListResponse(requests=[_summary_message(r) for r in found])


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


def _check_security(token: str | None, tls_cert: Path | None, tls_key: Path | None, insecure: bool) -> None:
    """Deletion requests are personal data and irreversible: plaintext or anonymous only on request."""
    if insecure:
        if tls_cert is not None or tls_key is not None:
            raise ConfigError("--insecure turns TLS off, yet a TLS cert/key was given; drop one or the other")
        return
    missing = [name for name, given in (("a TLS certificate (--tls-cert)", tls_cert),
                                        ("a TLS private key (--tls-key)", tls_key),
                                        ("a bearer token (--token)", token and token.strip())) if not given]
    if missing:
        raise ConfigError(f"the request server needs {', '.join(missing)}; for local testing only, "
                          "--insecure serves plaintext (the token is still checked if given)")


def _tls_credentials(cert: Path, key: Path) -> grpc.ServerCredentials:
    try:
        pair = (Path(key).read_bytes(), Path(cert).read_bytes())
    except OSError as err:
        raise ConfigError(f"cannot read the TLS certificate or key: {err}") from err
    return grpc.ssl_server_credentials([pair])


def _bind(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        bound = (server.add_insecure_port(address) if credentials is None
                 else server.add_secure_port(address, credentials))
    except RuntimeError as err:  # newer grpcio raises instead of returning 0
        raise ConfigError(f"cannot listen on {address} ({err}); is the port taken?") from err
    if bound == 0:
        raise ConfigError(f"cannot listen on {address}; is the port taken?")
    return bound


def start_request_server(
    node_dir: Path, *, port: int, host: str = "0.0.0.0", token: str | None = None,
    tls_cert: Path | None = None, tls_key: Path | None = None, insecure: bool = False, max_workers: int = 4,
) -> tuple[grpc.Server, int]:
    """Serve ForgetRequests for ``node_dir``; returns the started server and its port (port 0 = any free)."""
    _check_security(token, tls_cert, tls_key, insecure)
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be in 0..65535, got {port}")
    node_dir = Path(node_dir)
    NodeDirectory.open(node_dir)  # refuse a non-node (DataError) and finish any purge a crash left
    interceptors = [BearerTokenInterceptor(token)] if token else []
    # so_reuseport off: grpc's default lets a second node's server share the port and split the calls
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), interceptors=interceptors,
                         options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_ForgetRequestsServicer_to_server(ForgetRequestService(node_dir), server)
    credentials = None if insecure else _tls_credentials(tls_cert, tls_key)  # type: ignore[arg-type]
    bound = _bind(server, f"{host}:{port}", credentials)
    server.start()
    log.info("forget-request service for %s on %s:%d (%s, %s)", node_dir, host, bound,
             "plaintext" if insecure else "TLS", "token required" if token else "NO token")
    return server, bound


class RemoteRequestError(RequestError):
    """The node refused a call; ``code`` is the gRPC status, the message is the node's reason."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


class UnauthenticatedError(RemoteRequestError, PermissionError):
    """Missing or wrong token: a RequestError for the CLI, a PermissionError for generic callers."""


_CALLER_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                  grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION}


def _summary_dict(message: pb.RequestSummary) -> Summary:
    """The same keys as ``ForgetRequest.summary()``, plus ``receipt`` (a dict once committed)."""
    out: Summary = {f: getattr(message, f) for f in
                    ("request_id", "kind", "num_samples", "reason", "status", "created_at", "updated_at")}
    for optional in ("target_class", "rejection"):
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

    def list(self, status: str | None = None) -> Summaries:
        reply = self._call(self._stub.List, pb.ListRequest(status=status))
        return [_summary_dict(m) for m in reply.requests]
