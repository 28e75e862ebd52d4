"""`manage.py worker`: the background loops of dashboard/worker_tasks.py, on one leader.

Safe to start several times: only the process holding the PostgreSQL
advisory lock runs the loops; the others wait and take over when it dies.
SIGTERM stops the loops cleanly.
"""

import asyncio

from django.core.management.base import BaseCommand

from collector import connection_limits, runtime
from dashboard.worker_tasks import TASKS


class Command(BaseCommand):
    help = "Run retention, broker pollers, alert evaluation and webhook delivery (one leader)."

    def handle(self, *args, **options):
        connection_limits.raise_open_file_limit()
        tasks = runtime.load_tasks(TASKS)

        async def main():
            stop = asyncio.Event()
            runtime.install_stop_signals(stop)
            await runtime.lead(tasks, stop)

        asyncio.run(main())
