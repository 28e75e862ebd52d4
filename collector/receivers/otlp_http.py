"""The OTLP/HTTP and CloudEvents receiver: a small raw ASGI app.

It stays outside Django's request stack on purpose: ingest is the hot path,
and all it needs is a body, a token and the writer. Answers follow the OTLP
spec (PROTOCOLS §1): 200 with Export*ServiceResponse in the request's
encoding, partial_success for rejected items, 400/401/404/405/413/415 with a
google.rpc.Status, and 429/503 with Retry-After when the data was not stored
so the exporter retries. Bad data is never answered with a 5xx, because
older exporters retry every 5xx forever; nor is a bug met on the way.
"""

import json
import logging
import math
import time

from django.conf import settings
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from collector import auth, balance, stats
from collector.admission import DECODED_WEIGHT
from collector.batch import IngestUnavailable
from collector.cloudevents import normalize_events
from collector.decode import (
    JSON,
    PROTOBUF,
    BodyTooLarge,
    DecodeError,
    UnsupportedMediaType,
    decode_request,
    decompress,
    encode_response,
    media_type,
)
from collector.normalize import normalize_logs, normalize_traces, wire
from collector.tls import client_names

log = logging.getLogger(__name__)

OTLP_PATHS = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
EVENTS_PATH = "/v1/events"
CONTENT_TYPES = {PROTOBUF: b"application/x-protobuf", JSON: b"application/json"}


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


class Response:
    """An HTTP answer: status, headers and body."""

    __slots__ = ("status", "headers", "body")

    def __init__(
        self, status: int, body: bytes = b"", content_type: bytes = b"text/plain", headers=()
    ):
        self.status = status
        self.body = body
        self.headers = [(b"content-type", content_type), *headers]

    async def send(self, send) -> None:
        headers = [*self.headers, (b"content-length", str(len(self.body)).encode())]
        if balance.let_one_go():
            # This process of a pool holds more than its share of connections.
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def rpc_status(
    http_status: int, message: str, fmt: str | None, retry_after: int | None = None, headers=()
) -> Response:
    """A google.rpc.Status error answer, encoded like the request (JSON when unknown)."""
    codes = {
        400: code_pb2.INVALID_ARGUMENT,
        401: code_pb2.UNAUTHENTICATED,
        404: code_pb2.NOT_FOUND,
        405: code_pb2.UNIMPLEMENTED,
        413: code_pb2.RESOURCE_EXHAUSTED,
        415: code_pb2.INVALID_ARGUMENT,
        429: code_pb2.RESOURCE_EXHAUSTED,
        503: code_pb2.UNAVAILABLE,
    }
    status = status_pb2.Status(code=codes.get(http_status, code_pb2.UNKNOWN), message=message)
    headers = list(headers)
    if http_status == 400:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field="body", description=message)
                ]
            )
        )
        status.details.append(detail)
    if retry_after is not None:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay={"seconds": retry_after}))
        status.details.append(detail)
        headers.append((b"retry-after", str(retry_after).encode()))
    fmt = fmt or JSON
    return Response(http_status, encode_response(status, fmt), CONTENT_TYPES[fmt], headers)


def json_response(http_status: int, document: dict, headers=()) -> Response:
    return Response(http_status, json.dumps(document).encode(), b"application/json", headers)


def _format_of(headers: dict[str, str]) -> str:
    """The encoding an error answer takes: the request's, JSON when it has none we speak."""
    try:
        return media_type(headers.get("content-type"))
    except UnsupportedMediaType:
        return JSON


def _headers(scope) -> dict[str, str]:
    # Repeated headers are joined as HTTP allows; names are lowercase in ASGI.
    out: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


async def read_body(receive, headers: dict[str, str], limit: int) -> bytes:
    """The request body, refusing (BodyTooLarge) as soon as it passes `limit` bytes."""
    declared = headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise DecodeError(f"invalid Content-Length {declared!r}") from None
        if length > limit:
            raise BodyTooLarge(f"request body is {length} bytes, over the {limit} byte limit")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is over the {limit} byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _retry_after(exc: IngestUnavailable) -> int:
    return max(1, math.ceil(exc.retry_after or 1))


def count_data_points(request) -> int:
    """Data points in an ExportMetricsServiceRequest (the unit OTLP counts for metrics)."""
    total = 0
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    total += len(getattr(metric, kind).data_points)
    return total


def _decompress(body: bytes, encoding, reservation) -> bytes:
    """The body decompressed, what its decoding will hold reserved (Saturated
    when it does not fit)."""
    raw = decompress(body, encoding, settings.MAX_BODY_BYTES)
    reservation.add(len(raw) * DECODED_WEIGHT - (len(body) if raw is body else 0))
    return raw


def _decode_otlp(signal, body, encoding, fmt, project_id, reservation):
    """(the decoded metrics request, None) or (None, the normalised spans or logs):
    a span or log request is let go once normalised, while its rows wait."""
    raw = _decompress(body, encoding, reservation)
    if signal == "traces" and fmt == PROTOBUF:
        return None, wire.traces_from_protobuf(raw, project_id)
    request = decode_request(signal, raw, fmt)
    if signal == "traces":
        return None, normalize_traces(request, project_id)
    if signal == "logs":
        return None, normalize_logs(request, project_id)
    return request, None


class Receiver:
    """The ASGI callable; `writer` is a started collector.writer.Writer."""

    def __init__(self, writer):
        self.writer = writer

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            response = await self.route(scope, receive)
        except ClientGone:
            return
        await response.send(send)

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def route(self, scope, receive) -> Response:
        """The answer to one HTTP request; raises ClientGone when the client left."""
        try:
            return await self._dispatch(scope, receive)
        except ClientGone:
            raise
        except Exception as exc:
            # Last resort for a bug met while decoding or normalising: uvicorn
            # would answer a bare 500, which older exporters retry forever and
            # which would fail the same way every time. Storage trouble does
            # not end here: the writer raises IngestUnavailable (429/503) for it.
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            return _unexpected(scope, exc)

    async def _dispatch(self, scope, receive) -> Response:
        path, method = scope["path"], scope["method"]
        if path == EVENTS_PATH and method == "OPTIONS":
            return _webhook_handshake(_headers(scope))
        if path in OTLP_PATHS or path == EVENTS_PATH:
            headers = _headers(scope)
            if method != "POST":
                allow = b"POST, OPTIONS" if path == EVENTS_PATH else b"POST"
                return rpc_status(
                    405,
                    f"method {method} not allowed on {path}: use POST",
                    _format_of(headers),
                    headers=[(b"allow", allow)],
                )
            if path == EVENTS_PATH:
                return await self.events(headers, receive, client_names(scope))
            return await self.otlp(OTLP_PATHS[path], headers, receive, client_names(scope))
        if path in ("/healthz", "/readyz", "/metrics"):
            if method not in ("GET", "HEAD"):
                return Response(405, b"method not allowed: use GET\n", headers=[(b"allow", b"GET")])
            if path == "/healthz":
                return Response(200, b"ok\n")
            if path == "/readyz":
                if await self._ready():
                    return Response(200, b"ready\n")
                return Response(503, b"database unreachable\n")
            return Response(200, stats.render().encode(), b"text/plain; version=0.0.4")
        return rpc_status(
            404,
            f"no such path {path!r}: OTLP goes to /v1/traces, /v1/metrics and /v1/logs, "
            f"CloudEvents to {EVENTS_PATH}",
            _format_of(_headers(scope)),
        )

    async def _ready(self) -> bool:
        try:
            return bool(await self.writer.ready())
        except Exception:
            log.exception("readiness check failed")
            return False

    async def otlp(
        self, signal: str, headers: dict[str, str], receive, certificate: tuple[str, ...] = ()
    ) -> Response:
        reservation = self.writer.admission.reservation()
        try:
            return await self._otlp(signal, headers, receive, reservation, certificate)
        finally:
            reservation.release()

    async def _otlp(
        self, signal: str, headers: dict[str, str], receive, reservation, certificate
    ) -> Response:
        try:
            fmt = media_type(headers.get("content-type"))
        except UnsupportedMediaType as exc:
            fmt, unsupported = None, exc
        else:
            unsupported = None
        try:
            project_id = await auth.project_for(headers.get("authorization"), certificate)
            if unsupported is not None:
                raise unsupported
            # Refuse before reading and decoding: under overload the CPU
            # goes to the requests that can be stored.
            if signal != "metrics":
                self.writer.admit()
            else:
                self.writer.admission.check()  # metrics are stored elsewhere, but decoded here
            body = await read_body(receive, headers, settings.MAX_BODY_BYTES)
            reservation.add(len(body))
            await self.writer.make_way()
            request, normalized = await self.writer.admission.decode(
                len(body),
                _decode_otlp,
                signal,
                body,
                headers.get("content-encoding"),
                fmt,
                project_id,
                reservation,
                compressed=bool(headers.get("content-encoding")),
            )
            del body
        except auth.Unauthorized as exc:
            return rpc_status(401, str(exc), fmt)
        except (DecodeError, BodyTooLarge, UnsupportedMediaType) as exc:
            return rpc_status(exc.status, str(exc), fmt)
        except IngestUnavailable as exc:
            stats.refuse_request(signal)
            return rpc_status(exc.status, str(exc), fmt, _retry_after(exc))

        if signal == "metrics":
            return await self._metrics(project_id, request, fmt)
        result = normalized
        items = len(result.batch.spans) if signal == "traces" else len(result.batch.logs)
        stats.count("received", signal, items + result.rejected)
        stats.count("rejected", signal, result.rejected)
        if result.batch.size:
            try:
                written = await self.writer.submit(result.batch)
            except IngestUnavailable as exc:
                stats.count("dropped", signal, items)
                return rpc_status(exc.status, str(exc), fmt, _retry_after(exc))
            refused = result.absorb(written)
            stats.count("rejected", signal, refused)
            items -= refused
        stats.count("accepted", signal, items)
        if signal == "traces":
            response = ExportTraceServiceResponse()
            if result.rejected:
                response.partial_success.rejected_spans = result.rejected
                response.partial_success.error_message = result.error_message
        else:
            response = ExportLogsServiceResponse()
            if result.rejected:
                response.partial_success.rejected_log_records = result.rejected
                response.partial_success.error_message = result.error_message
        return Response(200, encode_response(response, fmt), CONTENT_TYPES[fmt])

    async def _metrics(self, project_id: int, request, fmt: str) -> Response:
        points = count_data_points(request)
        stats.count("received", "metrics", points)
        try:
            from collector.brokers.otlp_metrics import ingest_metrics
        except ImportError:
            log.error("OTLP metrics ingestion is not installed in this build")
            stats.count("dropped", "metrics", points)
            return rpc_status(503, "metrics ingestion is not available", fmt, 60)
        try:
            rejected, message = await ingest_metrics(project_id, request)
        except IngestUnavailable as exc:
            stats.count("dropped", "metrics", points)
            return rpc_status(exc.status, str(exc), fmt, _retry_after(exc))
        stats.count("rejected", "metrics", rejected)
        stats.count("accepted", "metrics", max(0, points - rejected))
        response = ExportMetricsServiceResponse()
        if rejected or message:
            response.partial_success.rejected_data_points = rejected
            response.partial_success.error_message = message or ""
        return Response(200, encode_response(response, fmt), CONTENT_TYPES[fmt])

    async def events(
        self, headers: dict[str, str], receive, certificate: tuple[str, ...] = ()
    ) -> Response:
        reservation = self.writer.admission.reservation()
        try:
            return await self._events(headers, receive, reservation, certificate)
        finally:
            reservation.release()

    async def _events(self, headers: dict[str, str], receive, reservation, certificate) -> Response:
        try:
            project_id = await auth.project_for(headers.get("authorization"), certificate)
            self.writer.admit()
            body = await read_body(receive, headers, settings.MAX_BODY_BYTES)
            reservation.add(len(body))
            await self.writer.make_way()
            result = await self.writer.admission.decode(
                len(body),
                _decode_events,
                headers,
                body,
                project_id,
                time.time_ns(),
                reservation,
                compressed=bool(headers.get("content-encoding")),
            )
            del body
        except auth.Unauthorized as exc:
            return json_response(401, {"error": str(exc)}, [(b"www-authenticate", b"Bearer")])
        except (DecodeError, BodyTooLarge, UnsupportedMediaType) as exc:
            return json_response(exc.status, {"error": str(exc)})
        except IngestUnavailable as exc:
            stats.refuse_request("events")
            return _events_unavailable(exc)

        stats.count("received", "events", result.accepted + len(result.rejected))
        stats.count("rejected", "events", len(result.rejected))
        body = {"accepted": result.accepted, "rejected": result.rejected}
        if result.mode != "batch" and result.rejected:
            # A single event that is invalid is a bad request, not a partial success.
            return json_response(400, {"error": result.rejected[0]["error"], **body})
        if result.batch.size:
            try:
                written = await self.writer.submit(result.batch)
            except IngestUnavailable as exc:
                stats.count("dropped", "events", result.accepted)
                return _events_unavailable(exc)
            # Events are checked against the storage window before this, so a
            # refusal here is a race with midnight; it is still reported.
            refused = getattr(written, "refused", 0) or 0
            if refused:
                stats.count("rejected", "events", refused)
                body["accepted"] -= refused
                reasons = "; ".join(getattr(written, "reasons", ()) or ())
                body["rejected"].append({"index": None, "error": f"{refused} refused: {reasons}"})
        stats.count("accepted", "events", body["accepted"])
        return json_response(202, body)


def _webhook_handshake(headers: dict[str, str]) -> Response:
    """The CloudEvents webhook abuse-protection handshake (OPTIONS with
    WebHook-Request-Origin): senders such as Azure Event Grid ask before posting."""
    origin = headers.get("webhook-request-origin")
    if not origin:
        return rpc_status(
            405,
            "OPTIONS is the CloudEvents webhook handshake and needs WebHook-Request-Origin; "
            "send events with POST",
            _format_of(headers),
            headers=[(b"allow", b"POST, OPTIONS")],
        )
    return Response(
        200,
        headers=[
            (b"allow", b"POST, OPTIONS"),
            (b"webhook-allowed-origin", origin.encode("latin-1")),
            (b"webhook-allowed-rate", b"*"),
        ],
    )


def _decode_events(headers, body, project_id, received_ns, reservation):
    raw = _decompress(body, headers.get("content-encoding"), reservation)
    return normalize_events(headers, raw, project_id, received_ns)


def _unexpected(scope, exc: Exception) -> Response:
    """The 400 for a request the receiver failed on, in the form its path answers errors."""
    detail = str(exc)
    if len(detail) > 200:
        detail = detail[:200] + "…"
    message = f"the collector could not process this request ({type(exc).__name__}: {detail})"
    if scope.get("path") == EVENTS_PATH:
        return json_response(400, {"error": message})
    return rpc_status(400, message, _format_of(_headers(scope)))


def _events_unavailable(exc: IngestUnavailable) -> Response:
    seconds = _retry_after(exc)
    return json_response(exc.status, {"error": str(exc)}, [(b"retry-after", str(seconds).encode())])


def make_app(writer):
    """The receiver as an ASGI application, submitting to `writer`."""
    return Receiver(writer)
