"""The shop's services' tracer providers, exporting spans over OTLP."""

import logging
import os
import ssl
import threading
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from dashboard.demo.model import (
    EXPORT_TIMEOUT_S,
    SERVICES,
    VERSION,
)


class Telemetry:
    """One TracerProvider per service, each with its own resource and span processor."""

    def __init__(self, make_processor: Callable[[], SpanProcessor]):
        self.providers = {}
        for service in SERVICES:
            provider = TracerProvider(
                resource=Resource.create(
                    {
                        "service.name": service,
                        "service.namespace": "shop",
                        "service.version": VERSION,
                        "deployment.environment.name": "demo",
                    }
                ),
                # run() shuts down explicitly; an atexit hook per provider
                # would flush them again at interpreter exit.
                shutdown_on_exit=False,
            )
            provider.add_span_processor(make_processor())
            self.providers[service] = provider

    @classmethod
    def otlp(cls, endpoint: str, headers: dict | None = None) -> "Telemetry":
        """Export each service's spans over OTLP/HTTP protobuf to `{endpoint}/v1/traces`."""
        url = f"{endpoint.rstrip('/')}/v1/traces"
        return cls(
            lambda: BatchSpanProcessor(
                OTLPSpanExporter(
                    endpoint=url, headers=dict(headers or {}), timeout=EXPORT_TIMEOUT_S
                ),
                schedule_delay_millis=1000,
            )
        )

    def tracer(self, service: str) -> trace.Tracer:
        return self.providers[service].get_tracer("eventscope.demo", VERSION)

    def shutdown(self) -> None:
        """Flush and stop every service's exporter.

        All at once: with the collector gone, each exporter retries until its
        timeout, and one after the other would take seven times as long."""
        stopping = [
            threading.Thread(target=provider.shutdown, name=f"demo-stop-{service}")
            for service, provider in self.providers.items()
        ]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()


class _QuietThread(logging.Filter):
    """Drops httpx's per-request INFO lines logged from one thread, which would
    otherwise log every CloudEvents post of the demo."""

    def __init__(self, thread_name: str):
        super().__init__()
        self.thread_name = thread_name

    def filter(self, record):
        return record.threadName != self.thread_name or record.levelno > logging.INFO


def _exporter_tls() -> ssl.SSLContext:
    """The TLS settings the OpenTelemetry exporters read from the environment
    (OTEL_EXPORTER_OTLP_CERTIFICATE, _CLIENT_CERTIFICATE, _CLIENT_KEY), so the
    CloudEvents posts reach the collector the same way the spans do."""
    context = ssl.create_default_context(cafile=os.environ.get("OTEL_EXPORTER_OTLP_CERTIFICATE"))
    client_certificate = os.environ.get("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
    if client_certificate:
        context.load_cert_chain(
            client_certificate, os.environ.get("OTEL_EXPORTER_OTLP_CLIENT_KEY") or None
        )
    return context
