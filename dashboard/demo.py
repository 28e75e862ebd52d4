"""The demo shop: an event-driven system instrumented with the real
OpenTelemetry SDK, exporting OTLP to a collector like any user's services.

Entry point (used by `manage.py demo` and `manage.py serve --demo`):

    run(endpoint: str, stop: threading.Event, headers: dict | None = None) -> None

blocks until `stop` is set. Implementation below.
"""
