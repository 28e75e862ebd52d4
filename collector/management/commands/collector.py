"""`manage.py collector`: the OTLP/CloudEvents receivers and the storage writer only.

Stateless apart from its queue, so several can run behind a load balancer;
rollups merge additively in PostgreSQL. It does not migrate (run `serve` or
`migrate` once per deployment); it stops cleanly on SIGTERM, committing
everything it acknowledged.
"""

import asyncio

from django.core.management.base import BaseCommand

from collector import runtime


class Command(BaseCommand):
    help = "Run the OTLP/HTTP, CloudEvents and OTLP/gRPC receivers with the storage writer."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
        parser.add_argument("--otlp-http-port", type=int, default=4318)
        parser.add_argument("--otlp-grpc-port", type=int, default=4317)

    def handle(self, *args, host, otlp_http_port, otlp_grpc_port, **options):
        ports = runtime.Ports(host=host, otlp_http=otlp_http_port, otlp_grpc=otlp_grpc_port)

        async def main():
            stop = asyncio.Event()
            runtime.install_stop_signals(stop)
            await runtime.run(
                ports,
                stop,
                on_started=lambda: self.stdout.write(
                    f"collector: OTLP/HTTP on {host}:{otlp_http_port}, "
                    f"OTLP/gRPC on {host}:{otlp_grpc_port}",
                    ending="\n",
                ),
            )

        asyncio.run(main())
