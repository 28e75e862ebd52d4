"""The background loops that `manage.py worker` (and `serve`) run on the leader.

Each entry is "module:function" of an `async def run(stop: asyncio.Event)`
that loops until `stop` is set, catching and logging its own errors so one
failing loop does not take down the others. Only the process holding the
worker advisory lock runs them (see dashboard/management/commands/worker.py).
"""

TASKS = {
    # partitions ahead of time, retention of raw data and rollups
    "maintenance": "collector.maintenance:run",
    # broker pollers and scrapes from EVENTSCOPE_BROKERS, lag status
    "brokers": "collector.brokers.poller:run",
    # alert rule evaluation (pending → firing → resolved), outbox rows
    "alerts": "dashboard.alerts.evaluate:run",
    # webhook delivery from the outbox, with retries
    "webhooks": "dashboard.alerts.sender:run",
    # hourly flow rollups for long flow-graph windows
    "flow_hours": "dashboard.flow.hours:run",
    # duplicate, missing, late, out-of-order and poison events from new stages
    "delivery": "dashboard.delivery.engine:run",
    # audit events past EVENTSCOPE_AUDIT_RETENTION_DAYS
    "audit_retention": "dashboard.audit.retention:run",
    # redrives of dead letters: jobs claimed from the database, resumed after a restart
    "redrives": "dashboard.deadletters.jobs:run",
    # replays asked to retry: sent with backoff until delivered or out of attempts
    "replays": "dashboard.replays.jobs:run",
    # expired sessions, old alert history, deliveries and replays
    "retention": "dashboard.retention:run",
}
