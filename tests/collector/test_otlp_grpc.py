"""The OTLP/gRPC receiver, through a real grpc.aio server and client."""

import asyncio
import time

import grpc
import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from collector import auth
from collector.batch import Saturated, StorageUnavailable
from collector.db import conninfo
from collector.decode import JSON, decode_request
from collector.models import Project
from tests.collector.receiver_harness import (
    CollectingWriter,
    FaultyWriter,
    RefusingWriter,
    grpc_receiver,
    running_writer,
)
from tests.collector.test_normalize import FIXTURES, traces

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_token_cache():
    auth.forget()
    yield
    auth.forget()


async def export_traces(address, request, token=None):
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        return await stub.Export(request, metadata=metadata, timeout=10)


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no google.rpc.Status in the trailers")


async def test_a_missing_or_bad_token_is_unauthenticated(ingest_token, read_token):
    async with grpc_receiver(None) as address:
        for token in (None, "es_unknown", read_token):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await export_traces(address, traces("traces_kafka_messaging.json"), token)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("error", [Saturated("queue full", 3), StorageUnavailable("db down", 9)])
async def test_unstored_data_is_unavailable_with_retry_info(ingest_token, error):
    writer = RefusingWriter(error)
    async with grpc_receiver(writer) as address:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await export_traces(address, traces("traces_kafka_messaging.json"), ingest_token)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    status = rich_status(caught.value)
    assert status.code == code_pb2.UNAVAILABLE
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert retry.retry_delay.seconds == error.retry_after
    assert writer.submitted == 0  # refused at admission, before the body was decoded


async def test_a_message_over_the_limit_is_resource_exhausted(settings, ingest_token):
    settings.MAX_BODY_BYTES = 1024
    request = traces("traces_kafka_messaging.json")
    assert request.ByteSize() > 1024
    async with grpc_receiver(None) as address:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await export_traces(address, request, ingest_token)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_rejected_spans_are_reported_as_partial_success(ingest_token):
    request = traces("traces_kafka_messaging.json")
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                span.span_id = b"\x00" * 8
    async with grpc_receiver(None) as address:
        response = await export_traces(address, request, ingest_token)
    assert isinstance(response, trace_service_pb2.ExportTraceServiceResponse)
    assert response.partial_success.rejected_spans == 4
    assert "span id is all zeros" in response.partial_success.error_message


async def test_logs_with_bad_context_are_partial_success(ingest_token):
    request = decode_request("logs", (FIXTURES / "logs_consumer_error.json").read_bytes(), JSON)
    for record in request.resource_logs[0].scope_logs[0].log_records:
        record.trace_id = b"\x01\x02"
    async with grpc_receiver(None) as address:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = logs_service_pb2_grpc.LogsServiceStub(channel)
            response = await stub.Export(
                request, metadata=(("authorization", f"Bearer {ingest_token}"),), timeout=10
            )
    assert isinstance(response, logs_service_pb2.ExportLogsServiceResponse)
    assert response.partial_success.rejected_log_records == 2
    assert "trace id must be 16 bytes" in response.partial_success.error_message


async def test_logs_are_stored_with_their_trace_context(project, ingest_token, telemetry_db):
    request = decode_request("logs", (FIXTURES / "logs_consumer_error.json").read_bytes(), JSON)
    now = time.time_ns()
    for record in request.resource_logs[0].scope_logs[0].log_records:
        record.time_unix_nano = now if record.time_unix_nano else 0
        record.observed_time_unix_nano = now + 1
    async with running_writer() as writer, grpc_receiver(writer) as address:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = logs_service_pb2_grpc.LogsServiceStub(channel)
            for _ in range(2):  # a retry stores nothing new
                response = await stub.Export(
                    request, metadata=(("authorization", f"Bearer {ingest_token}"),), timeout=10
                )
                assert response == logs_service_pb2.ExportLogsServiceResponse()
    async with await psycopg.AsyncConnection.connect(conninfo(), autocommit=True) as conn:
        rows = await (
            await conn.execute(
                "SELECT service, severity_number, body, trace_id, span_id, attributes "
                "FROM collector_log WHERE project_id = %s ORDER BY severity_number DESC",
                (project.pk,),
            )
        ).fetchall()
    assert len(rows) == 2
    service, severity, body, trace_id, span_id, attributes = rows[0]
    assert (service, severity) == ("payments", 17)
    assert body == "payment failed for order-1002: card declined"
    assert bytes(trace_id).hex() == "0af7651916cd43dd8448eb211c80319c"
    assert bytes(span_id).hex() == "b7ad6b7169203331"
    assert attributes["db.password"] == "[REDACTED]"


MALFORMED = b"\x0a\xff\xff\xff\xff\x0f"


async def export_raw(address, body: bytes, token=None, service="trace.v1.TraceService"):
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    async with grpc.aio.insecure_channel(address) as channel:
        export = channel.unary_unary(
            f"/opentelemetry.proto.collector.{service}/Export",
            request_serializer=None,
            response_deserializer=None,
        )
        return await export(body, metadata=metadata, timeout=10)


async def test_a_malformed_message_is_invalid_argument(ingest_token):
    async with grpc_receiver(None) as address:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await export_raw(address, MALFORMED, ingest_token)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid protobuf ExportTraceServiceRequest" in caught.value.details()


@pytest.mark.parametrize(
    "service",
    ["trace.v1.TraceService", "metrics.v1.MetricsService", "logs.v1.LogsService"],
)
async def test_the_token_is_checked_before_the_message_is_parsed(ingest_token, service):
    # A bad message with a bogus token: the answer is about the token, so a
    # client without one cannot make the server parse anything.
    async with grpc_receiver(None) as address:
        for token in (None, "es_bogus"):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await export_raw(address, MALFORMED, token, service)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_full_writer_refuses_before_the_message_is_parsed(ingest_token):
    async with grpc_receiver(RefusingWriter(Saturated("queue full", 4))) as address:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await export_raw(address, MALFORMED, ingest_token)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    retry = error_details_pb2.RetryInfo()
    assert rich_status(caught.value).details[0].Unpack(retry)
    assert retry.retry_delay.seconds == 4


async def test_an_unexpected_error_is_invalid_argument_not_unknown(ingest_token):
    async with grpc_receiver(FaultyWriter()) as address:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await export_traces(address, traces("traces_kafka_messaging.json"), ingest_token)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "RuntimeError: a bug, not bad data" in caught.value.details()


async def test_with_ingest_auth_off_a_bogus_token_goes_to_the_default_project(settings, project):
    settings.INGEST_AUTH = "off"
    writer = CollectingWriter()
    async with grpc_receiver(writer) as address:
        response = await export_traces(address, traces("traces_kafka_messaging.json"), "es_bogus")
    assert response == trace_service_pb2.ExportTraceServiceResponse()
    (batch,) = writer.batches
    assert batch.project_id != project.pk
    assert batch.project_id == await sync_to_async(_default_project)()


def _default_project() -> int:
    try:
        return Project.default().pk
    finally:
        connection.close()  # this worker thread's connection would outlive the test database


async def test_log_records_without_any_time_are_stored_once_when_retried(
    project, ingest_token, telemetry_db
):
    request = decode_request("logs", (FIXTURES / "logs_consumer_error.json").read_bytes(), JSON)
    for record in request.resource_logs[0].scope_logs[0].log_records:
        record.time_unix_nano = record.observed_time_unix_nano = 0
    async with running_writer() as writer, grpc_receiver(writer) as address:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = logs_service_pb2_grpc.LogsServiceStub(channel)
            for _ in range(2):  # the retry is stamped with a later receive time
                await stub.Export(
                    request, metadata=(("authorization", f"Bearer {ingest_token}"),), timeout=10
                )
                await asyncio.sleep(0.01)
    async with await psycopg.AsyncConnection.connect(conninfo(), autocommit=True) as conn:
        rows = await (
            await conn.execute(
                "SELECT body FROM collector_log WHERE project_id = %s", (project.pk,)
            )
        ).fetchall()
    assert len(rows) == 2  # the fixture's two records, once each
