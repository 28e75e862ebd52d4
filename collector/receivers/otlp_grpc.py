"""The OTLP/gRPC receiver (grpc.aio): Trace, Metrics and Logs Export services.

Each call is checked in the order that costs least first: the token, then
whether the writer can take data, then the message is parsed and normalised
(in a thread when it is large, as the HTTP receiver does, so one large
export does not hold every other request and health check).
Status codes as the OTLP spec says: UNAUTHENTICATED for a missing or bad
token, INVALID_ARGUMENT for bad data (never retried), UNAVAILABLE with a
google.rpc.RetryInfo detail when the writer is saturated or the database is
down (retried after that delay), RESOURCE_EXHAUSTED without RetryInfo for a
message over the size limit (not retried). Python's auto-instrumentation
exports over gRPC by default, so this is the port most services hit.
"""

import logging

import grpc
from django.conf import settings
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector import auth, connection_limits, stats
from collector.admission import DECODED_WEIGHT
from collector.batch import IngestUnavailable
from collector.decode import PROTOBUF, DecodeError, decode_request
from collector.normalize import normalize_logs, wire
from collector.receivers.otlp_http import count_data_points
from collector.tls import grpc_credentials

log = logging.getLogger(__name__)


class _RichStatus(grpc.Status):
    """A status carrying a google.rpc.Status in `grpc-status-details-bin`, where
    clients (the OpenTelemetry exporters among them) look for RetryInfo."""

    def __init__(self, status: status_pb2.Status):
        self.code = grpc.StatusCode.UNAVAILABLE
        for candidate in grpc.StatusCode:
            if candidate.value[0] == status.code:
                self.code = candidate
        self.details = status.message
        self.trailing_metadata = (("grpc-status-details-bin", status.SerializeToString()),)


async def _abort_unavailable(context, exc: IngestUnavailable):
    seconds = max(1, int(exc.retry_after or 1))
    retry_info = error_details_pb2.RetryInfo(retry_delay={"seconds": seconds})
    detail = any_pb2.Any()
    detail.Pack(retry_info)
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=str(exc), details=[detail])
    # The OpenTelemetry Python exporter reads the delay from this trailer of
    # its own, not from the status details; without it, it backs off 1, 2,
    # 4 s... whatever the collector asks.
    context.set_trailing_metadata((("google.rpc.retryinfo-bin", retry_info.SerializeToString()),))
    await context.abort_with_status(_RichStatus(status))


def _client_names(context) -> tuple[str, ...]:
    """The verified client certificate's CN and subject alternative names (mutual TLS)."""
    peer = context.auth_context() or {}
    names = [*peer.get("x509_common_name", ()), *peer.get("x509_subject_alternative_name", ())]
    return tuple(dict.fromkeys(n.decode() if isinstance(n, bytes) else n for n in names))


async def _project(context) -> int:
    metadata = dict(context.invocation_metadata() or ())
    try:
        return await auth.project_for(metadata.get("authorization"), _client_names(context))
    except auth.Unauthorized as exc:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
    except IngestUnavailable as exc:
        await _abort_unavailable(context, exc)


class _Export:
    """Shared body of the span and log Export calls, after the token and the parse."""

    signal = ""
    uses_writer = True

    def __init__(self, writer):
        self.writer = writer

    def decode(self, raw: bytes, project_id: int):
        """Parse and normalise (pure: may run in a thread)."""
        return self.normalize(decode_request(self.signal, raw, PROTOBUF), project_id)

    def normalize(self, request, project_id):
        raise NotImplementedError

    def respond(self, rejected: int, message: str):
        raise NotImplementedError

    def items(self, batch) -> int:
        raise NotImplementedError

    async def export(self, result, context, project_id: int):
        items = self.items(result.batch)
        stats.count("received", self.signal, items + result.rejected)
        stats.count("rejected", self.signal, result.rejected)
        if result.batch.size:
            try:
                written = await self.writer.submit(result.batch)
            except IngestUnavailable as exc:
                stats.count("dropped", self.signal, items)
                await _abort_unavailable(context, exc)
            refused = result.absorb(written)
            stats.count("rejected", self.signal, refused)
            items -= refused
        stats.count("accepted", self.signal, items)
        return self.respond(result.rejected, result.error_message)


class TraceService(_Export):
    signal = "traces"

    def decode(self, raw: bytes, project_id: int):
        # The compiled reader parses and normalises in one go (upb when it cannot).
        return wire.traces_from_protobuf(raw, project_id)

    def items(self, batch):
        return len(batch.spans)

    def respond(self, rejected, message):
        response = trace_service_pb2.ExportTraceServiceResponse()
        if rejected:
            response.partial_success.rejected_spans = rejected
            response.partial_success.error_message = message
        return response


class LogsService(_Export):
    signal = "logs"

    def normalize(self, request, project_id):
        return normalize_logs(request, project_id)

    def items(self, batch):
        return len(batch.logs)

    def respond(self, rejected, message):
        response = logs_service_pb2.ExportLogsServiceResponse()
        if rejected:
            response.partial_success.rejected_log_records = rejected
            response.partial_success.error_message = message
        return response


class MetricsService:
    """Metrics go to the broker-metrics ingest, which stores them itself: the
    writer is only asked for room in its byte budget."""

    signal = "metrics"
    uses_writer = False

    def __init__(self, writer):
        self.writer = writer

    def decode(self, raw: bytes, project_id: int):
        return decode_request(self.signal, raw, PROTOBUF)

    async def export(self, request, context, project_id: int):
        points = count_data_points(request)
        stats.count("received", "metrics", points)
        try:
            from collector.brokers.otlp_metrics import ingest_metrics
        except ImportError:
            stats.count("dropped", "metrics", points)
            await _abort_unavailable(
                context, IngestUnavailable("metrics ingestion is not available", 60)
            )
        try:
            rejected, message = await ingest_metrics(project_id, request)
        except IngestUnavailable as exc:
            stats.count("dropped", "metrics", points)
            await _abort_unavailable(context, exc)
        stats.count("rejected", "metrics", rejected)
        stats.count("accepted", "metrics", max(0, points - rejected))
        response = metrics_service_pb2.ExportMetricsServiceResponse()
        if rejected or message:
            response.partial_success.rejected_data_points = rejected
            response.partial_success.error_message = message or ""
        return response


def _export_handler(signal: str, servicer) -> grpc.RpcMethodHandler:
    """An Export method that parses its request itself, once the caller may send it.

    gRPC's own deserializer would parse before any check (so anyone could
    make the server parse 20 MiB) and answers a malformed message with
    INTERNAL; OTLP says bad data is INVALID_ARGUMENT, which exporters do not
    retry.
    """
    response_type = {
        "traces": trace_service_pb2.ExportTraceServiceResponse,
        "metrics": metrics_service_pb2.ExportMetricsServiceResponse,
        "logs": logs_service_pb2.ExportLogsServiceResponse,
    }[signal]

    async def export(raw: bytes, context):
        project_id = await _project(context)
        writer = servicer.writer
        reservation = writer.admission.reservation()
        try:
            # Refuse before parsing when the writer cannot take it.
            if servicer.uses_writer:
                writer.admit()
            else:
                writer.admission.check()
            reservation.add(len(raw) * DECODED_WEIGHT)
        except IngestUnavailable as exc:
            stats.refuse_request(signal)
            await _abort_unavailable(context, exc)
        try:
            if servicer.uses_writer:
                await writer.make_way()
            try:
                decoded = await writer.admission.decode(len(raw), servicer.decode, raw, project_id)
            except DecodeError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except IngestUnavailable as exc:
                stats.refuse_request(signal)
                await _abort_unavailable(context, exc)
            return await servicer.export(decoded, context, project_id)
        except grpc.aio.AbortError:
            raise  # the answer is already chosen
        except Exception as exc:
            # Last resort for a bug met while decoding or normalising: grpc
            # would answer UNKNOWN, which is not for bad data. Storage trouble
            # does not end here: the writer raises IngestUnavailable for it.
            log.exception("unexpected error in the %s Export call", signal)
            detail = str(exc)[:200]
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the collector could not process this request ({type(exc).__name__}: {detail})",
            )
        finally:
            reservation.release()

    return grpc.unary_unary_rpc_method_handler(
        export, request_deserializer=None, response_serializer=response_type.SerializeToString
    )


async def start_grpc_server(
    writer, host: str = "127.0.0.1", port: int = 4317, tls=None
) -> grpc.aio.Server:
    """Start the OTLP/gRPC receiver on host:port (0 = an ephemeral port), over
    TLS from `tls` (collector.tls.TLSFiles, re-read when the files change) when given.

    The bound port is on the returned server as `server.bound_port`. Messages
    over settings.MAX_BODY_BYTES (after decompression) are refused by gRPC
    itself with RESOURCE_EXHAUSTED.
    """
    limit = settings.MAX_BODY_BYTES
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            *connection_limits.grpc_options(),
        ]
    )
    services = (
        ("opentelemetry.proto.collector.trace.v1.TraceService", "traces", TraceService(writer)),
        (
            "opentelemetry.proto.collector.metrics.v1.MetricsService",
            "metrics",
            MetricsService(writer),
        ),
        ("opentelemetry.proto.collector.logs.v1.LogsService", "logs", LogsService(writer)),
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(
                name, {"Export": _export_handler(signal, servicer)}
            )
            for name, signal, servicer in services
        )
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        credentials, server.certificates = grpc_credentials(tls)
        bound = server.add_secure_port(address, credentials)
    if not bound:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}")
    await server.start()
    server.bound_port = bound
    log.info("OTLP/gRPC receiver listening on %s:%s%s", host, bound, " (TLS)" if tls else "")
    return server
