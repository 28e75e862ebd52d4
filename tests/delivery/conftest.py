"""A real collector (two processes) for the delivery tests, and services that
trace their messaging by hand the way OpenTelemetry instrumentations do."""

import contextlib
import datetime as dt

import pytest
from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from dashboard.delivery import engine
from dashboard.delivery.models import ChannelSetting, Finding
from tests.collector.test_processes import _banner
from tests.test_commands import free_port, manage, terminate


@pytest.fixture
def collector(telemetry_db, ingest_token):
    """`collector --processes 2` on free ports; yields (OTLP/HTTP base URL, token)."""
    http_port = free_port()
    process = manage(
        "collector", "--processes", "2",
        "--otlp-http-port", str(http_port), "--otlp-grpc-port", str(free_port()),
    )  # fmt: skip
    try:
        banner = _banner(process)
        assert banner.startswith("collector: 2 processes"), banner
        yield f"http://127.0.0.1:{http_port}", ingest_token
    finally:
        terminate(process)


class ResendingExporter(OTLPSpanExporter):
    """An exporter whose every request is sent twice, as after a lost answer."""

    def export(self, spans):
        first = super().export(spans)
        second = super().export(spans)
        assert first == second == SpanExportResult.SUCCESS
        return first


class Service:
    """One traced service: publishes with a PRODUCER span whose context travels
    in the message headers, processes in a CONSUMER span under that context."""

    def __init__(self, collector, name: str, resend: bool = False):
        url, token = collector
        exporter_class = ResendingExporter if resend else OTLPSpanExporter
        exporter = exporter_class(
            endpoint=f"{url}/v1/traces", headers={"authorization": f"Bearer {token}"}, timeout=20
        )
        self.provider = TracerProvider(resource=Resource.create({"service.name": name}))
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=60_000, max_export_batch_size=64)
        )
        self.tracer = self.provider.get_tracer(name)

    def publish(self, system: str, channel: str, message_id: str, **attributes) -> dict:
        """The headers to send the message with."""
        headers: dict[str, str] = {}
        with self.tracer.start_as_current_span(
            f"send {channel}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": system,
                "messaging.operation.type": "send",
                "messaging.destination.name": channel,
                "messaging.message.id": message_id,
                **attributes,
            },
        ):
            inject(headers)
        return headers

    @contextlib.contextmanager
    def process(self, system, channel, headers, message_id, group="", fail=None, stage=None):
        """A process span; `fail` makes it end in error, `stage` overrides the stage."""
        attributes = {
            "messaging.system": system,
            "messaging.operation.type": "process",
            "messaging.destination.name": channel,
            "messaging.message.id": message_id,
        }
        if group:
            attributes["messaging.consumer.group.name"] = group
        if stage:
            attributes["eventscope.stage"] = stage
        token = otel_context.attach(extract(headers))
        try:
            with self.tracer.start_as_current_span(
                f"process {channel}", kind=SpanKind.CONSUMER, attributes=attributes
            ) as span:
                yield span
                if fail:
                    span.set_status(Status(StatusCode.ERROR, fail))
        finally:
            otel_context.detach(token)

    def flush(self) -> None:
        assert self.provider.force_flush(30_000)

    def close(self) -> None:
        self.flush()
        self.provider.shutdown()


def findings(project, kind=None) -> dict:
    """{(kind, channel, group): sorted event ids} of the project's findings."""
    out: dict = {}
    rows = Finding.objects.filter(project=project)
    if kind:
        rows = rows.filter(kind=kind)
    for f in rows:
        out.setdefault((f.kind, f.channel, f.group), []).append(f.event_id)
    return {k: sorted(v) for k, v in out.items()}


def settle() -> dict:
    """Run delivery passes until nothing is left to read; the last pass's figures."""
    done = engine.run_pass()
    while done["left"]:
        done = engine.run_pass()
    return done


def set_channel(project, system, channel, **fields) -> None:
    ChannelSetting.objects.update_or_create(
        project=project, system=system, channel=channel, defaults=fields
    )


def ago(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
