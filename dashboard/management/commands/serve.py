"""`manage.py serve`: everything in one process and one asyncio loop.

Migrates first, then serves the web app (HTTP + websockets), the OTLP/HTTP +
CloudEvents and OTLP/gRPC receivers, the storage writer and the background
loops (leader-elected, so a separate `worker` may run too); `--demo` also
runs the demo shop in a thread, exporting to the local OTLP/HTTP port,
into the default project, with an alert rule that follows its slow consumer.
"""

import asyncio
import logging
import math
import os
import threading

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from collector import runtime
from dashboard.worker_tasks import TASKS

log = logging.getLogger(__name__)

DEMO_RULE = "analytics is behind (demo)"


class Command(BaseCommand):
    help = "Run the web UI, the receivers, the writer and the background worker in one process."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
        parser.add_argument("--port", type=int, default=8000, help="web UI and JSON API")
        parser.add_argument("--otlp-http-port", type=int, default=4318)
        parser.add_argument("--otlp-grpc-port", type=int, default=4317)
        parser.add_argument("--demo", action="store_true", help="also run the demo shop")
        parser.add_argument(
            "--demo-cycle-seconds",
            type=float,
            default=None,
            help="with --demo: the length of the slow consumer's slow/fast cycle "
            "(default 120: slow for 90 s, then fast for 30 s)",
        )

    def handle(
        self,
        *args,
        host,
        port,
        otlp_http_port,
        otlp_grpc_port,
        demo,
        demo_cycle_seconds=None,
        **options,
    ):
        from dashboard import demo as demo_shop

        if demo_cycle_seconds is not None and not demo:
            raise CommandError("--demo-cycle-seconds goes with --demo")
        cycle = demo_shop.ANALYTICS_CYCLE_S if demo_cycle_seconds is None else demo_cycle_seconds
        if not (cycle > 0 and math.isfinite(cycle)):
            raise CommandError(f"--demo-cycle-seconds must be positive, got {cycle:g}")
        call_command("migrate", interactive=False, verbosity=0)
        if demo:
            self._fit_lag_window(cycle)
            self._demo_alert_rule()
        tasks = runtime.load_tasks(TASKS)
        # Without its own health checks: runtime.run answers /healthz and
        # /readyz on the web port from its writer.
        from dashboard.asgi import web_application

        demo_headers = self._demo_headers() if demo else None
        ports = runtime.Ports(
            host=host, otlp_http=otlp_http_port, otlp_grpc=otlp_grpc_port, web=port
        )
        demo_stop = threading.Event()
        demo_thread = None

        def started():
            nonlocal demo_thread
            self.stdout.write(self._banner(ports, demo, cycle), ending="\n")
            if demo:
                demo_thread = self._start_demo(otlp_http_port, demo_stop, demo_headers, cycle)

        async def stop_demo():
            demo_stop.set()
            if demo_thread is not None:
                await asyncio.to_thread(demo_thread.join, 10)

        async def main():
            signalled = asyncio.Event()
            runtime.install_stop_signals(signalled)
            stop = asyncio.Event()

            async def stop_after_the_demo():
                # The demo flushes its last spans and events on the way out:
                # the receivers must still be listening when it does.
                await signalled.wait()
                await stop_demo()
                stop.set()

            sequencer = asyncio.create_task(stop_after_the_demo())
            try:
                await runtime.run(
                    ports, stop, web_app=web_application, tasks=tasks, on_started=started
                )
            finally:
                sequencer.cancel()
                await stop_demo()  # when run() ended on its own, e.g. a port in use

        asyncio.run(main())

    def _demo_headers(self):
        from collector.models import ApiToken, Project, Scope

        if settings.INGEST_AUTH == "off":
            return None
        _, token = ApiToken.issue(Project.default(), "demo (serve --demo)", Scope.INGEST)
        return {"authorization": f"Bearer {token}"}

    def _fit_lag_window(self, cycle: float) -> None:
        """Judge lag over a window shorter than the demo's slow phase, unless
        EVENTSCOPE_LAG_WINDOW_SECONDS says otherwise: over the default ten
        minutes a consumer that catches up every two minutes is always ok."""
        from dashboard import demo as demo_shop

        if "EVENTSCOPE_LAG_WINDOW_SECONDS" not in os.environ:
            settings.LAG_WINDOW_SECONDS = demo_shop.lag_window(cycle)

    def _demo_alert_rule(self) -> None:
        """A rule that fires while analytics is behind and resolves once it
        has caught up. It has no webhook: the alerts page shows it, nothing
        is sent anywhere. Made once; a rule of that name is left as it is."""
        from collector.models import Project
        from dashboard.alerts.inputs import save_rule
        from dashboard.alerts.models import AlertRule

        project = Project.default()
        if AlertRule.objects.filter(project=project, name=DEMO_RULE).exists():
            return
        save_rule(
            project,
            {
                "name": DEMO_RULE,
                "kind": "lag_status",
                "params": {"system": "kafka", "channel": "shop.orders", "group": "analytics"},
            },
        )

    def _banner(self, ports, demo: bool, cycle: float) -> str:
        """What a person needs next: where to look, how to sign in, where to send."""
        from dashboard import demo as demo_shop

        scheme = "https" if settings.TLS_CERT_FILE else "http"
        shown = f"[{ports.host}]" if ":" in ports.host else ports.host
        if ports.host in ("0.0.0.0", "::", ""):
            shown = "127.0.0.1"
        project = settings.DEFAULT_PROJECT
        auth = (
            "ingest auth is off: telemetry without a token goes to project "
            f"{project!r} (EVENTSCOPE_INGEST_AUTH=required turns it on)"
            if settings.INGEST_AUTH == "off"
            else "ingest needs a token: .venv/bin/python manage.py createtoken NAME "
            f"--project {project} --scope ingest"
        )
        lines = [
            f"Eventscope is serving the dashboard on {scheme}://{shown}:{ports.web}/",
            f"  OTLP/HTTP and CloudEvents: {scheme}://{shown}:{ports.otlp_http} "
            "(/v1/traces, /v1/metrics, /v1/logs, /v1/events)",
            f"  OTLP/gRPC: {shown}:{ports.otlp_grpc}",
            f"  {auth}",
            "  sign in with an account made by: .venv/bin/python manage.py createuser NAME "
            f"--project {project} --role admin (or createsuperuser)",
        ]
        if demo:
            lines.append(
                f"  the demo shop sends to project {project!r}: analytics is slow for "
                f"{cycle * demo_shop.SLOW_SHARE:g} s of every {cycle:g} s (lag status judged over "
                f"{settings.LAG_WINDOW_SECONDS} s), and the alert rule {DEMO_RULE!r} follows it"
            )
        return "\n".join(lines)

    def _start_demo(self, otlp_http_port, stop, headers, cycle) -> threading.Thread:
        from dashboard import demo

        # Over TLS the demo trusts what OTEL_EXPORTER_OTLP_CERTIFICATE names, as any exporter.
        scheme = "https" if settings.TLS_CERT_FILE else "http"
        endpoint = f"{scheme}://127.0.0.1:{otlp_http_port}"

        def run_demo():
            try:
                demo.run(endpoint, stop, headers, cycle_s=cycle)
            except Exception:
                log.exception("the demo stopped with an error")

        thread = threading.Thread(target=run_demo, name="demo", daemon=True)
        thread.start()
        return thread
