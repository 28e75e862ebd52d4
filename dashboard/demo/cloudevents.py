"""The reporter that posts the shop's CloudEvents to /v1/events from a thread of its own."""

import logging
import queue
import threading

import httpx

from dashboard.demo.telemetry import _exporter_tls, _QuietThread

log = logging.getLogger("dashboard.demo")  # the logger the demo has always used


class CloudEventSender:
    """Posts CloudEvents batches from a thread of its own, so a slow or absent
    collector never stalls the shop; when the queue is full, events are dropped."""

    def __init__(self, endpoint: str, headers: dict | None = None):
        self.url = f"{endpoint.rstrip('/')}/v1/events"
        self.client = httpx.Client(headers=dict(headers or {}), timeout=5.0, verify=_exporter_tls())
        self.pending: queue.Queue = queue.Queue(maxsize=1000)
        self.dropped = 0
        self.thread = threading.Thread(target=self._deliver, name="demo-cloudevents", daemon=True)
        self.quiet = _QuietThread(self.thread.name)
        logging.getLogger("httpx").addFilter(self.quiet)
        self.thread.start()

    def send(self, events: list[dict]) -> None:
        try:
            self.pending.put_nowait(events)
        except queue.Full:
            self.dropped += len(events)

    def close(self) -> None:
        """Deliver what is queued (waiting a few seconds at most), then stop."""
        try:
            self.pending.put(None, timeout=5)
        except queue.Full:
            pass
        self.thread.join(timeout=10)
        self.client.close()
        logging.getLogger("httpx").removeFilter(self.quiet)

    def _deliver(self) -> None:
        failing = False
        while (events := self.pending.get()) is not None:
            try:
                response = self.client.post(
                    self.url,
                    json=events,
                    headers={"content-type": "application/cloudevents-batch+json"},
                )
                problem = None if response.is_success else f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = str(exc) or type(exc).__name__
            # One warning per outage, not one per batch.
            if problem and not failing:
                log.warning("the demo's CloudEvents are not accepted at %s: %s", self.url, problem)
            failing = problem is not None
