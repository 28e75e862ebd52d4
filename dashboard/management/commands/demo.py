"""`manage.py demo`: the demo shop, exporting OTLP to a collector until Ctrl-C, SIGTERM or --duration."""

import math
import signal
import threading
import urllib.parse
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from dashboard import demo


class Command(BaseCommand):
    help = (
        "Run a demo event-driven shop (orders -> payments/shipping/email, a slow consumer, "
        "failing and dead-lettered events) that sends OpenTelemetry data to a collector."
    )
    # The shop talks to the collector over OTLP only; it needs no database.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--endpoint",
            default="http://127.0.0.1:4318",
            help="the collector's OTLP/HTTP base URL (spans go to /v1/traces)",
        )
        parser.add_argument(
            "--rate", type=float, default=demo.DEFAULT_RATE, help="orders per second"
        )
        parser.add_argument(
            "--duration", type=float, default=None, help="stop after this many seconds"
        )
        parser.add_argument("--token", default=None, help="an ingest token for the collector")
        parser.add_argument(
            "--token-file",
            default=None,
            help="read the ingest token from this file (e.g. written by createtoken --output)",
        )
        parser.add_argument(
            "--seed", type=int, default=None, help="replay the same orders and failures"
        )
        parser.add_argument(
            "--cycle-seconds",
            type=float,
            default=demo.ANALYTICS_CYCLE_S,
            help="analytics' slow/fast cycle: slow for three quarters of it (default 120)",
        )

    def handle(
        self,
        *args,
        endpoint,
        rate,
        duration,
        token,
        seed,
        token_file=None,
        cycle_seconds=demo.ANALYTICS_CYCLE_S,
        **options,
    ):
        if token_file:
            try:
                token = Path(token_file).read_text().strip()
            except OSError as exc:
                raise CommandError(f"--token-file {token_file}: {exc}") from None
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise CommandError(f"--endpoint must be an http(s) URL, got {endpoint!r}")
        if not rate > 0:
            raise CommandError(f"--rate must be a positive number of orders per second, got {rate}")
        if not (cycle_seconds > 0 and math.isfinite(cycle_seconds)):
            raise CommandError(f"--cycle-seconds must be positive, got {cycle_seconds}")
        if duration is not None and not duration > 0:
            raise CommandError(f"--duration must be a positive number of seconds, got {duration}")
        headers = {"authorization": f"Bearer {token}"} if token else None

        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        if duration is not None:
            timer = threading.Timer(duration, stop.set)
            timer.daemon = True
            timer.start()

        self.stdout.write(f"Demo shop: {rate:g} orders/s to {endpoint} (Ctrl-C stops it)")
        tally = demo.run(endpoint, stop, headers, rate=rate, seed=seed, cycle_s=cycle_seconds)
        self.stdout.write(
            f"Demo shop stopped: {tally.orders} orders, {tally.published} messages published, "
            f"{tally.processed} processed, {tally.retried} retried, {tally.failed} failed, "
            f"{tally.dead_lettered} dead-lettered, {tally.cloudevents} CloudEvents "
            f"({tally.archived} dead letters archived with their payload)."
        )
