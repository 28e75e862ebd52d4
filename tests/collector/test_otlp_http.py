"""The OTLP/HTTP + CloudEvents receiver, over real HTTP (uvicorn on an ephemeral port)."""

import asyncio
import gzip
import json
import threading
import time
import zlib
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from google.protobuf.any_pb2 import Any
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from collector import auth, stats
from collector.batch import Saturated, StorageUnavailable
from collector.db import conninfo
from collector.decode import decode_request
from collector.models import ApiToken, Project, Scope
from tests.collector.receiver_harness import (
    CollectingWriter,
    FaultyWriter,
    RefusingWriter,
    http_receiver,
    running_writer,
)
from tests.collector.test_cloudevents import fixtures_within_retention  # noqa: F401 (autouse)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TRACES_JSON = (FIXTURES / "otlp" / "traces_kafka_messaging.json").read_bytes()
PROTOBUF = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_token_cache():
    auth.forget()
    yield
    auth.forget()


async def in_db(function, *args):
    """Run ORM code from an async test on a worker thread that closes its connection."""

    def run():
        try:
            return function(*args)
        finally:
            connection.close()

    return await sync_to_async(run)()


def bearer(token):
    return {"authorization": f"Bearer {token}"}


def rpc_status(response, fmt="protobuf") -> status_pb2.Status:
    status = status_pb2.Status()
    if fmt == "json":
        from google.protobuf import json_format

        json_format.Parse(response.content, status)
    else:
        status.ParseFromString(response.content)
    return status


async def post(url, path, body=b"", headers=None):
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(url + path, content=body, headers=headers or {})


async def test_health_and_metrics_endpoints(ingest_token):
    async with http_receiver(RefusingWriter(StorageUnavailable("down"))) as url:
        async with httpx.AsyncClient() as client:
            health = await client.get(url + "/healthz")
            ready = await client.get(url + "/readyz")
            metrics = await client.get(url + "/metrics")
            missing = await client.get(url + "/v2/traces")
    assert (health.status_code, health.text) == (200, "ok\n")
    assert ready.status_code == 503
    assert metrics.status_code == 200
    assert metrics.headers["content-type"] == "text/plain; version=0.0.4"
    assert 'eventscope_received_items_total{signal="traces"}' in metrics.text
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    status = rpc_status(missing, "json")
    assert status.code == code_pb2.NOT_FOUND
    assert "/v1/traces" in status.message


async def test_it_answers_405_to_anything_but_post_with_an_rpc_status(ingest_token):
    async with http_receiver(None) as url:
        async with httpx.AsyncClient() as client:
            response = await client.get(url + "/v1/traces")
            as_proto = await client.put(url + "/v1/logs", content=b"", headers=PROTOBUF)
            events = await client.get(url + "/v1/events")
            wrong_path = await client.post(url + "/v1/trace", content=b"", headers=PROTOBUF)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["content-type"] == "application/json"
    assert rpc_status(response, "json").code == code_pb2.UNIMPLEMENTED
    assert "use POST" in rpc_status(response, "json").message
    # Every 4xx body is a google.rpc.Status in the request's encoding.
    assert (as_proto.status_code, as_proto.headers["content-type"]) == (
        405,
        "application/x-protobuf",
    )
    assert "use POST" in rpc_status(as_proto).message
    assert events.status_code == 405
    assert events.headers["allow"] == "POST, OPTIONS"
    assert "use POST" in rpc_status(events, "json").message
    assert (wrong_path.status_code, wrong_path.headers["content-type"]) == (
        404,
        "application/x-protobuf",
    )
    assert rpc_status(wrong_path).code == code_pb2.NOT_FOUND


async def test_a_missing_token_is_401_with_an_rpc_status(ingest_token):
    async with http_receiver(None) as url:
        response = await post(url, "/v1/traces", TRACES_JSON, JSON)
    assert response.status_code == 401
    status = rpc_status(response, "json")
    assert status.code == code_pb2.UNAUTHENTICATED
    assert "missing ingest token" in status.message


async def test_invalid_revoked_and_read_tokens_are_401(project, ingest_token, read_token):
    revoked, revoked_plain = await in_db(ApiToken.issue, project, "old", Scope.INGEST)
    await in_db(revoked.revoke)
    async with http_receiver(None) as url:
        for token in ("es_nope", revoked_plain, read_token):
            response = await post(url, "/v1/traces", TRACES_JSON, {**JSON, **bearer(token)})
            assert response.status_code == 401, token
        basic = await post(url, "/v1/traces", TRACES_JSON, {**JSON, "authorization": "Basic eDp5"})
    assert basic.status_code == 401
    assert "Bearer" in rpc_status(basic, "json").message


async def test_with_ingest_auth_off_only_a_valid_token_picks_the_project(
    settings, project, ingest_token, read_token, caplog
):
    settings.INGEST_AUTH = "off"
    writer = CollectingWriter()
    sent = [
        {},
        bearer(ingest_token),
        bearer("es_wrongtoken123"),
        bearer("es_wrongtoken123"),
        bearer(read_token),
        {"authorization": "Basic eDp5"},
    ]
    with caplog.at_level("WARNING", logger="collector.auth"):
        async with http_receiver(writer) as url:
            answers = [
                await post(url, "/v1/traces", TRACES_JSON, {**JSON, **headers}) for headers in sent
            ]
    assert [a.status_code for a in answers] == [200] * len(sent)
    default = await in_db(lambda: Project.objects.get(slug=settings.DEFAULT_PROJECT).pk)
    assert [b.project_id for b in writer.batches] == [
        default,
        project.pk,  # a valid ingest token still decides the project
        default,
        default,
        default,
        default,
    ]
    warnings = [r.getMessage() for r in caplog.records if r.name == "collector.auth"]
    # Once per token prefix, never the whole token.
    assert len([w for w in warnings if "es_wrong…" in w]) == 1
    assert len(warnings) == 3
    assert not any("es_wrongtoken123" in w or read_token in w for w in warnings)
    assert all("default project 'default'" in w for w in warnings)


async def test_an_unknown_content_type_is_415(ingest_token):
    async with http_receiver(None) as url:
        response = await post(
            url, "/v1/traces", b"<spans/>", {"content-type": "text/xml", **bearer(ingest_token)}
        )
    assert response.status_code == 415
    assert "application/x-protobuf" in rpc_status(response, "json").message


async def test_an_unknown_content_encoding_is_415(ingest_token):
    async with http_receiver(None) as url:
        response = await post(
            url,
            "/v1/traces",
            TRACES_JSON,
            {**JSON, **bearer(ingest_token), "content-encoding": "br"},
        )
    assert response.status_code == 415


async def test_undecodable_bodies_are_400_in_the_request_encoding(ingest_token):
    async with http_receiver(None) as url:
        as_json = await post(
            url, "/v1/traces", b'{"resourceSpans": [', {**JSON, **bearer(ingest_token)}
        )
        as_proto = await post(
            url, "/v1/traces", b"\x0a\xff\xff\xff\xff\x0f", {**PROTOBUF, **bearer(ingest_token)}
        )
    assert as_json.status_code == 400
    assert as_json.headers["content-type"] == "application/json"
    status = rpc_status(as_json, "json")
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert "invalid JSON" in status.message
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert as_proto.status_code == 400
    assert as_proto.headers["content-type"] == "application/x-protobuf"
    assert "invalid protobuf" in rpc_status(as_proto).message


async def test_a_body_over_the_limit_is_413_before_it_is_read(settings, ingest_token):
    settings.MAX_BODY_BYTES = 4096
    async with http_receiver(None) as url:
        declared = await post(url, "/v1/traces", b"x" * 5000, {**PROTOBUF, **bearer(ingest_token)})

        async def chunks():
            # No Content-Length: the receiver must count as it reads.
            for _ in range(100):
                yield b"y" * 1024

        async with httpx.AsyncClient() as client:
            streamed = await client.post(
                url + "/v1/traces", content=chunks(), headers={**PROTOBUF, **bearer(ingest_token)}
            )
    assert declared.status_code == 413
    assert rpc_status(declared).code == code_pb2.RESOURCE_EXHAUSTED
    assert streamed.status_code == 413


def _gzip_bomb(size=1 << 30) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1 << 20)
    return b"".join(compressor.compress(zeros) for _ in range(size >> 20)) + compressor.flush()


def _many_member_bomb(members=1000) -> bytes:
    # 1,000 gzip members of 100 kB of zeros: 132 kB on the wire. Inflating
    # each member's leftovers again once grew a collector to 22 GB.
    return gzip.compress(bytes(100_000)) * members


@pytest.mark.parametrize(
    ("path", "content_type", "make_bomb"),
    [
        ("/v1/traces", "application/x-protobuf", _gzip_bomb),
        ("/v1/traces", "application/x-protobuf", _many_member_bomb),
        ("/v1/metrics", "application/json", _many_member_bomb),
        ("/v1/logs", "application/x-protobuf", _many_member_bomb),
        ("/v1/events", "application/cloudevents-batch+json", _many_member_bomb),
    ],
)
async def test_it_rejects_gzip_bomb_with_flat_memory(ingest_token, path, content_type, make_bomb):
    bomb = make_bomb()
    assert len(bomb) < 2 * 1024 * 1024  # 1 GiB or 100 MB of zeros
    headers = {"content-type": content_type, **bearer(ingest_token), "content-encoding": "gzip"}
    process = psutil.Process()
    async with http_receiver(None) as url:
        # A small compressed request first: the server, its decoding threads
        # and their allocator arenas exist before the baseline is taken.
        await post(url, path, gzip.compress(b"{}"), headers)
        baseline = process.memory_info().rss
        peak = baseline
        done = threading.Event()

        def sample():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, process.memory_info().rss)
                done.wait(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            response = await post(url, path, bomb, headers)
        finally:
            done.set()
            sampler.join()
    assert response.status_code == 413
    assert "inflates past" in response.text
    # The 20 MiB limit bounds the inflated copy; the client's copy of the bomb
    # and the received body are another ~2 MiB.
    assert peak - baseline < 50 * 1024 * 1024


@pytest.mark.parametrize(
    ("error", "status"),
    [(Saturated("queue full", 2), 429), (StorageUnavailable("db down", 7), 503)],
)
async def test_unstored_data_is_answered_with_retry_after(ingest_token, error, status):
    writer = RefusingWriter(error)
    before = stats.snapshot()["refused_requests"]["traces"]
    async with http_receiver(writer) as url:
        response = await post(url, "/v1/traces", TRACES_JSON, {**JSON, **bearer(ingest_token)})
        events = await post(
            url,
            "/v1/events",
            (FIXTURES / "cloudevents" / "structured_order_created.json").read_bytes(),
            {"content-type": "application/cloudevents+json", **bearer(ingest_token)},
        )
    assert writer.submitted == 0  # refused at admission, before the body was decoded
    assert response.status_code == status
    assert response.headers["retry-after"] == str(error.retry_after)
    body = rpc_status(response, "json")
    retry = error_details_pb2.RetryInfo()
    assert any(isinstance(d, Any) and d.Unpack(retry) for d in body.details)
    assert retry.retry_delay.seconds == error.retry_after
    assert stats.snapshot()["refused_requests"]["traces"] == before + 1
    assert events.status_code == status
    assert events.headers["retry-after"] == str(error.retry_after)


async def test_an_all_rejected_request_is_200_with_partial_success(ingest_token):
    document = json.loads(TRACES_JSON)
    for resource in document["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                span["traceId"] = "00000000000000000000000000000000"
    async with http_receiver(None) as url:
        response = await post(
            url,
            "/v1/traces",
            gzip.compress(json.dumps(document).encode()),
            {**JSON, **bearer(ingest_token), "content-encoding": "gzip"},
        )
    assert response.status_code == 200
    from google.protobuf import json_format

    parsed = json_format.Parse(response.content, ExportTraceServiceResponse())
    assert parsed.partial_success.rejected_spans == 4
    assert "trace id is all zeros" in parsed.partial_success.error_message


async def test_cloudevents_bad_json_is_400_with_a_message(ingest_token):
    async with http_receiver(None) as url:
        response = await post(
            url,
            "/v1/events",
            b'{"specversion": "1.0",',
            {"content-type": "application/cloudevents+json", **bearer(ingest_token)},
        )
    assert response.status_code == 400
    assert response.json()["error"].startswith("invalid JSON: Expecting property name")


async def test_cloudevents_without_token_is_401_and_unknown_type_is_415(ingest_token):
    async with http_receiver(None) as url:
        unauthorized = await post(
            url, "/v1/events", b"{}", {"content-type": "application/cloudevents+json"}
        )
        unsupported = await post(
            url, "/v1/events", b"hello", {"content-type": "text/plain", **bearer(ingest_token)}
        )
    assert unauthorized.status_code == 401
    assert unauthorized.headers["www-authenticate"] == "Bearer"
    assert unsupported.status_code == 415
    assert "ce-id" in unsupported.json()["error"]


async def test_a_single_invalid_cloudevent_is_400(ingest_token):
    async with http_receiver(None) as url:
        response = await post(
            url,
            "/v1/events",
            json.dumps({"specversion": "1.0", "source": "/s", "type": "t"}).encode(),
            {"content-type": "application/cloudevents+json", **bearer(ingest_token)},
        )
    assert response.status_code == 400
    assert response.json() == {
        "error": "required attribute 'id' is missing",
        "accepted": 0,
        "rejected": [{"index": 0, "error": "required attribute 'id' is missing"}],
    }


async def test_concurrent_requests_do_not_block_each_other(ingest_token):
    async with http_receiver(None) as url:
        responses = await asyncio.gather(
            *[
                post(url, "/v1/traces", b"not json", {**JSON, **bearer(ingest_token)})
                for _ in range(20)
            ]
        )
    assert {r.status_code for r in responses} == {400}


# ---- accepted data (handed to the writer) ---------------------------------------


async def test_json_traces_are_answered_in_json_with_partial_success(ingest_token):
    document = json.loads(TRACES_JSON)
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "not-hex"
    writer = CollectingWriter()
    before = stats.snapshot()
    async with http_receiver(writer) as url:
        response = await post(
            url, "/v1/traces", json.dumps(document).encode(), {**JSON, **bearer(ingest_token)}
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "partialSuccess": {
            "rejectedSpans": "1",
            "errorMessage": "1 item(s) rejected: span 'POST /orders': span id must be 8 bytes, got 1",
        }
    }
    assert len(writer.spans()) == 3
    after = stats.snapshot()
    assert after["received"]["traces"] - before["received"]["traces"] == 4
    assert after["accepted"]["traces"] - before["accepted"]["traces"] == 3
    assert after["rejected"]["traces"] - before["rejected"]["traces"] == 1


async def test_protobuf_traces_get_an_empty_protobuf_response(project, ingest_token):
    request = decode_request("traces", TRACES_JSON, "json")
    writer = CollectingWriter()
    async with http_receiver(writer) as url:
        response = await post(
            url, "/v1/traces", request.SerializeToString(), {**PROTOBUF, **bearer(ingest_token)}
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()
    (batch,) = writer.batches
    assert batch.project_id == project.pk


async def test_logs_are_handed_to_the_writer(ingest_token):
    writer = CollectingWriter()
    body = (FIXTURES / "otlp" / "logs_consumer_error.json").read_bytes()
    async with http_receiver(writer) as url:
        response = await post(
            url,
            "/v1/logs",
            zlib.compress(body),
            {**JSON, **bearer(ingest_token), "content-encoding": "deflate"},
        )
    assert (response.status_code, response.json()) == (200, {})
    (batch,) = writer.batches
    assert batch.signal == "logs" and len(batch.logs) == 2


async def test_metrics_bodies_are_decoded_and_bad_ones_refused(ingest_token):
    async with http_receiver(CollectingWriter()) as url:
        bad = await post(
            url, "/v1/metrics", b'{"resourceMetrics": 5}', {**JSON, **bearer(ingest_token)}
        )
    assert bad.status_code == 400
    assert "ExportMetricsServiceRequest" in rpc_status(bad, "json").message


CE_HEADERS = {"content-type": "application/cloudevents+json"}


async def test_cloudevents_in_all_three_modes_are_accepted(project, ingest_token):
    writer = CollectingWriter()
    binary_headers = {
        "content-type": "text/plain; charset=utf-8",
        "ce-specversion": "1.0",
        "ce-id": "order-9",
        "ce-source": "/shop/orders",
        "ce-type": "com.example.order.note",
        "ce-esstage": "processed",
        "ce-esservice": "email",
        **bearer(ingest_token),
    }
    async with http_receiver(writer) as url:
        structured = await post(
            url,
            "/v1/events",
            (FIXTURES / "cloudevents" / "structured_order_created.json").read_bytes(),
            {**CE_HEADERS, **bearer(ingest_token)},
        )
        batch = await post(
            url,
            "/v1/events",
            (FIXTURES / "cloudevents" / "batch_mixed.json").read_bytes(),
            {"content-type": "application/cloudevents-batch+json", **bearer(ingest_token)},
        )
        binary = await post(url, "/v1/events", b"gift wrap, please", binary_headers)
    assert (structured.status_code, structured.json()) == (202, {"accepted": 1, "rejected": []})
    assert batch.status_code == 202
    assert batch.json()["accepted"] == 2
    assert [r["index"] for r in batch.json()["rejected"]] == [1, 3, 4, 5, 6]
    assert (binary.status_code, binary.json()) == (202, {"accepted": 1, "rejected": []})
    assert [len(b.envelopes) for b in writer.batches] == [1, 2, 1]
    assert all(b.project_id == project.pk and b.signal == "events" for b in writer.batches)
    note = writer.batches[2].envelopes[0]
    assert (note.data_text, note.datacontenttype) == (
        "gift wrap, please",
        "text/plain; charset=utf-8",
    )


# ---- through the real writer into PostgreSQL ------------------------------------------


async def counts(project_id):
    async with await psycopg.AsyncConnection.connect(conninfo(), autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT (SELECT count(*) FROM collector_span WHERE project_id = %(p)s),"
                " (SELECT count(*) FROM collector_stage WHERE project_id = %(p)s),"
                " (SELECT count(*) FROM collector_envelope WHERE project_id = %(p)s),"
                " (SELECT coalesce(sum(count), 0) FROM collector_flowrollup WHERE project_id = %(p)s)",
                {"p": project_id},
            )
        ).fetchone()
    return tuple(int(v) for v in row)


def fresh_traces():
    """The Kafka fixture moved to the present, so the storage window takes it."""
    request = decode_request("traces", TRACES_JSON, "json")
    shift = time.time_ns() - 1751540002000000000
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                span.start_time_unix_nano += shift
                span.end_time_unix_nano += shift
    return request


async def test_a_retried_batch_is_stored_once(project, ingest_token, telemetry_db):
    body = fresh_traces().SerializeToString()
    event = json.dumps(
        {
            "specversion": "1.0",
            "id": "order-77",
            "source": "/shop/orders",
            "type": "com.example.shop.order.created",
            "eschannel": "shop.orders",
            "essystem": "kafka",
            "data": {"total": 1},
        }
    ).encode()
    async with running_writer() as writer, http_receiver(writer) as url:
        for attempt in range(3):
            response = await post(url, "/v1/traces", body, {**PROTOBUF, **bearer(ingest_token)})
            assert response.status_code == 200
            assert ExportTraceServiceResponse.FromString(response.content) == (
                ExportTraceServiceResponse()
            )
            events = await post(url, "/v1/events", event, {**CE_HEADERS, **bearer(ingest_token)})
            assert events.json() == {"accepted": 1, "rejected": []}
            if attempt == 0:
                first = await counts(project.pk)
    assert first == (4, 4, 1, 4)  # 4 spans; 3 span stages + 1 event stage; 1 envelope
    assert await counts(project.pk) == first


async def test_rows_outside_the_storage_window_are_partial_success(
    settings, project, ingest_token, telemetry_db
):
    settings.RETENTION_DAYS = 7
    request = fresh_traces()
    old = request.resource_spans[0].scope_spans[0].spans[0]
    old.start_time_unix_nano -= 30 * 86_400 * 10**9
    old.end_time_unix_nano -= 30 * 86_400 * 10**9
    async with running_writer() as writer, http_receiver(writer) as url:
        response = await post(
            url, "/v1/traces", request.SerializeToString(), {**PROTOBUF, **bearer(ingest_token)}
        )
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert response.status_code == 200
    assert parsed.partial_success.rejected_spans == 1
    assert "retention window" in parsed.partial_success.error_message
    assert (await counts(project.pk))[0] == 3


async def test_readyz_follows_the_database(telemetry_db):
    async with running_writer() as writer, http_receiver(writer) as url:
        async with httpx.AsyncClient() as client:
            response = await client.get(url + "/readyz")
    assert response.status_code == 200


async def test_the_cloudevents_webhook_handshake_is_answered():
    async with http_receiver(None) as url:
        async with httpx.AsyncClient() as client:
            handshake = await client.options(
                url + "/v1/events", headers={"WebHook-Request-Origin": "eventemitter.example.com"}
            )
            bare = await client.options(url + "/v1/events")
    assert handshake.status_code == 200
    assert handshake.headers["webhook-allowed-origin"] == "eventemitter.example.com"
    assert handshake.headers["webhook-allowed-rate"] == "*"
    assert bare.status_code == 405
    assert bare.headers["allow"] == "POST, OPTIONS"
    assert "WebHook-Request-Origin" in rpc_status(bare, "json").message


async def test_a_revoked_token_stops_working_when_its_cache_entry_expires(project, monkeypatch):
    token, plaintext = await in_db(ApiToken.issue, project, "ci", Scope.INGEST)
    header = f"Bearer {plaintext}"
    assert await auth.project_for(header) == project.pk
    await in_db(token.revoke)
    assert await auth.project_for(header) == project.pk  # still cached
    monkeypatch.setattr(auth, "CACHE_SECONDS", 0.0)
    auth.forget()
    with pytest.raises(auth.Unauthorized, match="revoked"):
        await auth.project_for(header)
    assert await in_db(lambda: ApiToken.objects.get(pk=token.pk).last_used_at)


# ---- bad data is never a 5xx ---------------------------------------------------------


def ce(**attributes) -> dict:
    return {"specversion": "1.0", "id": "e-1", "source": "/shop", "type": "t", **attributes}


async def test_a_batch_with_numbers_json_cannot_carry_stores_the_other_events(
    project, ingest_token, telemetry_db
):
    good = json.dumps(ce(id="good", data={"total": 1}))
    body = (
        f'[{good}, {{"specversion": "1.0", "id": "inf", "source": "/shop", "type": "t",'
        ' "data": {"a": Infinity}},'
        ' {"specversion": "1.0", "id": "nan", "source": "/shop", "type": "t", "esnote": NaN},'
        ' {"specversion": "1.0", "id": "long", "source": "/shop", "type": "t",'
        f' "data": {{"n": {"7" * 5000}}}}},'
        ' {"specversion": "1.0", "id": "slow", "source": "/shop", "type": "t",'
        f' "esduration": {"9" * 400}}}]'
    )
    async with running_writer() as writer, http_receiver(writer) as url:
        response = await post(
            url,
            "/v1/events",
            body.encode(),
            {"content-type": "application/cloudevents-batch+json", **bearer(ingest_token)},
        )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["accepted"] == 1
    assert [(r["index"], r["error"].split(":")[0]) for r in answer["rejected"]] == [
        (1, "attribute 'data' at data.a"),
        (2, "attribute 'esnote'"),
        (3, "attribute 'data' at data.n"),
        (4, "'esduration' must be a number of milliseconds, got an integer of 400 digits"),
    ]
    assert "Infinity is not a JSON number" in answer["rejected"][0]["error"]
    assert "5000 digits" in answer["rejected"][2]["error"]
    assert (await counts(project.pk))[1:3] == (1, 1)  # the good event's stage and envelope


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            b'{"specversion": "1.0", "id": "1", "source": "/s", "type": "t",'
            b' "data": {"a": Infinity}}',
            "attribute 'data' at data.a: Infinity is not a JSON number "
            "(JSON has no NaN or Infinity)",
        ),
        (
            b'{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "esx": -Infinity}',
            "attribute 'esx': -Infinity is not a JSON number (JSON has no NaN or Infinity)",
        ),
        (
            b'{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "esduration": '
            + b"9" * 400
            + b"}",
            "'esduration' must be a number of milliseconds, got an integer of 400 digits",
        ),
        (
            b'{"specversion": "1.0", "id": "1", "source": "/s", "type": "t",'
            b' "time": "2025-07-03T00:00:001234Z"}',
            "'time' must be an RFC 3339 timestamp such as 2025-07-03T10:15:30.5Z, "
            "got '2025-07-03T00:00:001234Z'",
        ),
    ],
    ids=["infinity-in-data", "-infinity-extension", "400-digit-esduration", "bad-time"],
)
async def test_a_structured_event_json_cannot_store_is_400_naming_the_problem(
    ingest_token, body, error
):
    writer = CollectingWriter()
    async with http_receiver(writer) as url:
        response = await post(url, "/v1/events", body, {**CE_HEADERS, **bearer(ingest_token)})
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert writer.batches == []


async def test_a_binary_event_with_an_invalid_time_is_400(ingest_token):
    headers = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-source": "/shop",
        "ce-type": "t",
        "ce-time": "2025-07-03T10%3A15%3A30",  # percent-encoded, and no offset
        **bearer(ingest_token),
    }
    async with http_receiver(None) as url:
        response = await post(url, "/v1/events", b"{}", headers)
    assert response.status_code == 400
    assert response.json()["error"].startswith("'time' must be an RFC 3339 timestamp")
    assert "'2025-07-03T10:15:30'" in response.json()["error"]


async def test_a_binary_json_payload_with_an_overlong_integer_is_kept_as_text(ingest_token):
    headers = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-source": "/shop",
        "ce-type": "t",
        **bearer(ingest_token),
    }
    payload = b'{"n": ' + b"1" * 5000 + b"}"
    writer = CollectingWriter()
    async with http_receiver(writer) as url:
        response = await post(url, "/v1/events", payload, headers)
    assert (response.status_code, response.json()) == (202, {"accepted": 1, "rejected": []})
    (envelope,) = writer.batches[0].envelopes
    assert envelope.data is None and envelope.data_text == payload.decode()


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("NaN", "invalid JSON: NaN is not a JSON number"),
        ("Infinity", "invalid JSON: Infinity is not a JSON number"),
        ("1" * 5000, "invalid JSON: an integer of 5000 digits is over the 4300-digit limit"),
    ],
    ids=["nan", "infinity", "5000-digit-integer"],
)
async def test_otlp_json_with_numbers_json_cannot_carry_is_400(ingest_token, number, message):
    document = json.loads(TRACES_JSON)
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = [
        {"key": "ratio", "value": {"doubleValue": "@"}}
    ]
    body = json.dumps(document).replace('"@"', number).encode()
    async with http_receiver(None) as url:
        response = await post(url, "/v1/traces", body, {**JSON, **bearer(ingest_token)})
    assert response.status_code == 400
    status = rpc_status(response, "json")
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert status.message.startswith(message)


async def test_json_that_utf8_cannot_spell_is_never_a_5xx(project, ingest_token, telemetry_db):
    # JSON can write an unpaired surrogate ("\ud800"); UTF-8 and PostgreSQL cannot hold one.
    trace = json.loads(TRACES_JSON)
    trace["resourceSpans"][0]["resource"]["\ud800"] = 1
    event = ce(id="s-1", subject="a\ud800b", data={"note": "x\ud800y"})
    async with running_writer() as writer, http_receiver(writer) as url:
        traces = await post(
            url, "/v1/traces", json.dumps(trace).encode(), {**JSON, **bearer(ingest_token)}
        )
        events = await post(
            url, "/v1/events", json.dumps(event).encode(), {**CE_HEADERS, **bearer(ingest_token)}
        )
    assert traces.status_code == 400
    assert "not valid Unicode" in rpc_status(traces, "json").message
    assert (events.status_code, events.json()) == (202, {"accepted": 1, "rejected": []})
    async with await psycopg.AsyncConnection.connect(conninfo(), autocommit=True) as conn:
        subject, data = await (
            await conn.execute(
                "SELECT subject, data FROM collector_envelope WHERE project_id = %s", (project.pk,)
            )
        ).fetchone()
    assert (subject, data) == ("a?b", {"note": "x?y"})  # as clean_text replaces it


@pytest.mark.parametrize("content_type", ["application/json", "application/x-protobuf"])
async def test_an_unexpected_error_is_a_400_rpc_status_not_a_bare_500(ingest_token, content_type):
    body = TRACES_JSON
    if content_type == "application/x-protobuf":
        body = decode_request("traces", TRACES_JSON, "json").SerializeToString()
    headers = {"content-type": content_type, **bearer(ingest_token)}
    async with http_receiver(FaultyWriter()) as url:
        response = await post(url, "/v1/traces", body, headers)
        events = await post(
            url, "/v1/events", json.dumps(ce()).encode(), {**CE_HEADERS, **bearer(ingest_token)}
        )
    assert response.status_code == 400
    assert response.headers["content-type"] == content_type
    status = rpc_status(response, "json" if content_type == "application/json" else "protobuf")
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert "RuntimeError: a bug, not bad data" in status.message
    assert events.status_code == 400
    assert "RuntimeError" in events.json()["error"]


# ---- CloudEvents binary mode: attributes and trace contexts -------------------------------


async def test_binary_mode_keeps_the_event_trace_context_apart_from_the_transport_one(
    project, ingest_token, telemetry_db
):
    creation = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "order%2F3001",  # percent-encoded "/"
        "ce-source": "%2Fshop%2Forders",
        "ce-type": "com.example.shop.order.shipped",
        "ce-subject": "Order%20%e2%82%ac42",  # lowercase hex
        "ce-esstage": "processed",
        "ce-esservice": '"shipping"',  # quoted
        "ce-eschannel": "shop.orders",
        "ce-esgroup": "shipping",
        "ce-traceparent": creation,
        # This hop's context (the HTTP call that carries the event), not the event's:
        "traceparent": "00-11111111111111111111111111111111-2222222222222222-01",
        **bearer(ingest_token),
    }
    async with running_writer() as writer, http_receiver(writer) as url:
        response = await post(url, "/v1/events", b'{"carrier": "dhl"}', headers)
    assert (response.status_code, response.json()) == (202, {"accepted": 1, "rejected": []})
    async with await psycopg.AsyncConnection.connect(conninfo(), autocommit=True) as conn:
        envelope = await (
            await conn.execute(
                "SELECT source, event_id, subject, trace_id, extensions FROM collector_envelope"
                " WHERE project_id = %s",
                (project.pk,),
            )
        ).fetchone()
        stage = await (
            await conn.execute(
                "SELECT service, trace_id, span_id, linked_trace_ids, linked_span_ids"
                " FROM collector_stage WHERE project_id = %s",
                (project.pk,),
            )
        ).fetchone()
    source, event_id, subject, trace_id, extensions = envelope
    assert (source, event_id, subject) == ("/shop/orders", "order/3001", "Order €42")
    assert bytes(trace_id).hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert extensions["traceparent"] == creation
    assert "11111111111111111111111111111111" not in json.dumps(extensions)
    service, stage_trace, span_id, linked_traces, linked_spans = stage
    assert service == "shipping"
    assert bytes(stage_trace).hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    # A consumer stage links to the producer's span, the event's creation context.
    assert span_id is None
    assert [bytes(t).hex() for t in linked_traces] == ["4bf92f3577b34da6a3ce929d0e0e4736"]
    assert [bytes(s).hex() for s in linked_spans] == ["00f067aa0ba902b7"]


async def test_binary_mode_reads_raw_utf8_header_values(ingest_token):
    writer = CollectingWriter()
    headers = [
        (b"content-type", b"text/plain"),
        (b"ce-specversion", b"1.0"),
        (b"ce-id", b"u-1"),
        (b"ce-source", b"/shop"),
        (b"ce-type", b"t"),
        (b"ce-subject", "Bestellung für Zoë".encode()),  # not percent-encoded, as some send
        (b"authorization", f"Bearer {ingest_token}".encode()),
    ]
    async with http_receiver(writer) as url:
        async with httpx.AsyncClient() as client:
            response = await client.post(url + "/v1/events", content=b"hi", headers=headers)
    assert response.status_code == 202
    assert writer.batches[0].envelopes[0].subject == "Bestellung für Zoë"


# ---- test isolation -------------------------------------------------------------------


def test_every_table_filled_outside_django_is_emptied_between_tests(transactional_db):
    from django.db import connection

    from tests.conftest import TELEMETRY_TABLES

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
            " AND NOT c.relispartition"
        )
        tables = {name for (name,) in cursor.fetchall()}
    # Django's flush empties the tables of managed models; everything else
    # is written with SQL of our own and must be truncated by telemetry_db.
    unmanaged = tables - set(connection.introspection.django_table_names()) - {"django_migrations"}
    assert unmanaged <= set(TELEMETRY_TABLES)
    assert "collector_log" in unmanaged
