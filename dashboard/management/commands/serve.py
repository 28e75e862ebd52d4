"""`manage.py serve`: everything in one process and one asyncio loop.

Migrates first, then serves the web app (HTTP + websockets), the OTLP/HTTP +
CloudEvents and OTLP/gRPC receivers, the storage writer and the background
loops (leader-elected, so a separate `worker` may run too); `--demo` also
runs the demo shop in a thread, exporting to the local OTLP/HTTP port.
"""

import asyncio
import logging
import threading

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from collector import runtime
from dashboard.worker_tasks import TASKS

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the web UI, the receivers, the writer and the background worker in one process."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
        parser.add_argument("--port", type=int, default=8000, help="web UI and JSON API")
        parser.add_argument("--otlp-http-port", type=int, default=4318)
        parser.add_argument("--otlp-grpc-port", type=int, default=4317)
        parser.add_argument("--demo", action="store_true", help="also run the demo shop")

    def handle(self, *args, host, port, otlp_http_port, otlp_grpc_port, demo, **options):
        call_command("migrate", interactive=False, verbosity=0)
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
            self.stdout.write(
                f"serving the dashboard on {'https' if settings.TLS_CERT_FILE else 'http'}://"
                f"{host}:{port}, OTLP/HTTP on {host}:"
                f"{otlp_http_port}, OTLP/gRPC on {host}:{otlp_grpc_port}",
                ending="\n",
            )
            if demo:
                demo_thread = self._start_demo(otlp_http_port, demo_stop, demo_headers)

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
        if settings.INGEST_AUTH == "off":
            return None
        from collector.models import ApiToken, Project, Scope

        _, token = ApiToken.issue(Project.default(), "demo (serve --demo)", Scope.INGEST)
        return {"authorization": f"Bearer {token}"}

    def _start_demo(self, otlp_http_port, stop, headers) -> threading.Thread:
        from dashboard import demo

        # Over TLS the demo trusts what OTEL_EXPORTER_OTLP_CERTIFICATE names, as any exporter.
        scheme = "https" if settings.TLS_CERT_FILE else "http"
        endpoint = f"{scheme}://127.0.0.1:{otlp_http_port}"

        def run_demo():
            try:
                demo.run(endpoint, stop, headers)
            except Exception:
                log.exception("the demo stopped with an error")

        thread = threading.Thread(target=run_demo, name="demo", daemon=True)
        thread.start()
        return thread
