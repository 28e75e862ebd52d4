"""`manage.py collector`: the OTLP/CloudEvents receivers and the storage writer only.

Stateless apart from its queue, so several can run behind a load balancer;
rollups merge additively in PostgreSQL. `--processes N` runs N of them on
this machine, sharing the ports, to use N cores. It does not migrate (run
`serve` or `migrate` once per deployment); it stops cleanly on SIGTERM,
committing everything it acknowledged.
"""

import asyncio
import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from collector import processes as processes_module
from collector import runtime


class Command(BaseCommand):
    help = "Run the OTLP/HTTP, CloudEvents and OTLP/gRPC receivers with the storage writer."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
        parser.add_argument("--otlp-http-port", type=int, default=4318)
        parser.add_argument("--otlp-grpc-port", type=int, default=4317)
        parser.add_argument(
            "--processes",
            type=int,
            default=1,
            help="collector processes sharing the ports (about one per core; default 1)",
        )
        # Set by the parent of --processes N for each of its children.
        parser.add_argument("--shared-ports", action="store_true", help="(internal)")
        parser.add_argument("--ready-fd", type=int, default=None, help="(internal)")
        parser.add_argument("--parent-pid", type=int, default=None, help="(internal)")

    def handle(
        self, *args, host, otlp_http_port, otlp_grpc_port, processes, shared_ports, ready_fd,
        parent_pid, **options,
    ):  # fmt: skip
        if processes < 1:
            raise CommandError("--processes must be at least 1")
        if parent_pid is not None:
            # Before anything else: a parent killed while this one starts
            # must not leave it behind, holding the shared ports.
            processes_module.stop_with_parent(parent_pid)
        banner = f"OTLP/HTTP on {host}:{otlp_http_port}, OTLP/gRPC on {host}:{otlp_grpc_port}"
        if settings.TLS_CERT_FILE:
            banner += f", TLS (client certificates: {settings.TLS_CLIENT_AUTH})"
        if processes > 1:
            self._run_pool(processes, host, otlp_http_port, otlp_grpc_port, banner)
            return
        ports = runtime.Ports(
            host=host, otlp_http=otlp_http_port, otlp_grpc=otlp_grpc_port, reuse_port=shared_ports
        )

        def started():
            if ready_fd is not None:
                os.write(ready_fd, b"1")
                os.close(ready_fd)
            else:
                self.stdout.write(f"collector: {banner}", ending="\n")

        async def main():
            stop = asyncio.Event()
            runtime.install_stop_signals(stop)
            watcher = None
            if parent_pid is not None:
                watcher = asyncio.create_task(processes_module.watch_parent(parent_pid, stop))
            try:
                await runtime.run(ports, stop, on_started=started)
            finally:
                if watcher is not None:
                    watcher.cancel()

        asyncio.run(main())

    def _run_pool(self, count, host, http_port, grpc_port, banner):
        pool = processes_module.Pool(count, host, http_port, grpc_port)

        def started():
            self.stdout.write(f"collector: {count} processes, {banner}", ending="\n")
            self.stdout.flush()

        async def main():
            stop = asyncio.Event()
            runtime.install_stop_signals(stop)
            return await pool.run(stop, on_started=started)

        try:
            status = asyncio.run(main())
        except OSError as exc:
            raise CommandError(f"cannot start the collector: {exc}") from exc
        if status:
            sys.exit(status)
