"""The worker loop that polls the brokers named in EVENTSCOPE_BROKERS.

URL forms (`;`-separated in the setting):

  rabbitmq+http://user:pass@host:15672     RabbitMQ management API (https too)
  nats://[user:pass@]host:4222             NATS JetStream consumers
  redis://[:pass@]host:6379/0              Redis Streams consumer groups (rediss too)
  prometheus+http://host:9308/metrics      a Prometheus text endpoint: kafka_exporter,
                                           rabbitmq_prometheus, prometheus-nats-exporter
  sqs:// sns:// kinesis:// eventbridge:// lambda://<region>[?endpoint_url=…]
                                           Amazon's services (collector/brokers/aws/)
  servicebus://, eventhubs://, eventgrid://, pubsub://, pulsar+http(s)://
                                           Azure, Google and Pulsar (see their modules)

Any of them may end in `?project=<slug>` (or `#project=<slug>` for
Prometheus paths with their own query) to file the figures under that
project; the default is EVENTSCOPE_DEFAULT_PROJECT.

Every broker is polled by a loop of its own, on its own cadence and with
its own timeout, so one that is down or slow is marked "unreachable since
…" while the others keep being read every interval. Old samples are pruned
by another loop.
"""

import asyncio
import contextlib
import datetime as dt
import importlib
import logging
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from collector.brokers import nats as nats_poller
from collector.brokers import prometheus, rabbitmq, redis_streams, samples, topology

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 600
# Samples older than this are thinned to one a minute per partition.
THIN_AFTER = dt.timedelta(days=1)
# Brokers whose last poll failed, so an outage is logged once, not every poll.
_failing: set[str] = set()
SYSTEMS = {
    "rabbitmq+http": "rabbitmq",
    "rabbitmq+https": "rabbitmq",
    "nats": "nats",
    "tls": "nats",
    "redis": "redis",
    "rediss": "redis",
    "prometheus+http": "prometheus",
    "prometheus+https": "prometheus",
    "sqs": "aws_sqs",
    "sns": "aws_sns",
    "kinesis": "aws_kinesis",
    "eventbridge": "aws_eventbridge",
    "lambda": "aws_lambda",
    "servicebus": "servicebus",
    "eventhubs": "eventhubs",
    "eventgrid": "eventgrid",
    "pubsub": "gcp_pubsub",
    "pulsar+http": "pulsar",
    "pulsar+https": "pulsar",
}
# Readers by kind: module and function, imported when first polled so a
# deployment without a cloud system never loads its client library.
READERS = {
    "aws_sqs": "collector.brokers.aws.sqs",
    "aws_sns": "collector.brokers.aws.sns",
    "aws_kinesis": "collector.brokers.aws.kinesis",
    "aws_eventbridge": "collector.brokers.aws.eventbridge",
    "aws_lambda": "collector.brokers.aws.lambdas",
    "servicebus": "collector.brokers.azure.servicebus",
    "eventhubs": "collector.brokers.azure.eventhubs",
    "eventgrid": "collector.brokers.azure.eventgrid",
    "gcp_pubsub": "collector.brokers.gcp_pubsub",
    "pulsar": "collector.brokers.pulsar",
}


@dataclass(frozen=True)
class Broker:
    """One configured broker: how to reach it and how it is named on the page."""

    kind: str  # a value of SYSTEMS
    url: str  # with credentials, without the project parameter
    source: str  # without credentials: safe to store and show
    project: str  # project slug

    async def poll(self, timeout: float) -> samples.Report:
        if self.kind == "rabbitmq":
            return samples.Report(await rabbitmq.poll(self.url, timeout))
        if self.kind == "nats":
            return samples.Report(await nats_poller.poll(self.url, timeout))
        if self.kind == "redis":
            return samples.Report(await redis_streams.poll(self.url, timeout))
        if self.kind in READERS:
            found = await importlib.import_module(READERS[self.kind]).poll(self.url, timeout)
            return found if isinstance(found, samples.Report) else samples.Report(found)
        return await scrape(self.url, timeout)


def _without_credentials(parts) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any("://" in v and "?" in v for _, v in pairs):
        # A parameter that is itself a URL with a token in its query (an
        # Event Hubs checkpoint container's SAS) is shown without that query.
        query = urlencode([(k, v.split("?", 1)[0] if "://" in v else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def parse_broker(url: str, default_project: str | None = None) -> Broker:
    """A Broker from one EVENTSCOPE_BROKERS entry; ImproperlyConfigured says what is wrong."""
    url = url.strip()
    parts = urlsplit(url)
    kind = SYSTEMS.get(parts.scheme.lower())
    if kind is None:
        raise ImproperlyConfigured(
            f"EVENTSCOPE_BROKERS: {url.split('@')[-1]!r} has scheme {parts.scheme!r}; "
            "expected one of " + ", ".join(f"{scheme}://" for scheme in SYSTEMS)
        )
    if not parts.hostname:
        raise ImproperlyConfigured(f"EVENTSCOPE_BROKERS: {parts.scheme}:// URL without a host")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ImproperlyConfigured(
            f"EVENTSCOPE_BROKERS: bad port in {_without_credentials(parts._replace(netloc=''))}"
        ) from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    fragment = dict(parse_qsl(parts.fragment))
    project = fragment.get("project") or dict(query).get("project")
    query = [(k, v) for k, v in query if k != "project"]
    parts = parts._replace(query=urlencode(query), fragment="")
    return Broker(
        kind=kind,
        url=urlunsplit(parts),
        source=_without_credentials(parts),
        project=project or default_project or settings.DEFAULT_PROJECT,
    )


def configured_brokers() -> list[Broker]:
    return [parse_broker(url) for url in settings.BROKERS]


async def scrape(url: str, timeout: float) -> samples.Report:
    """What one Prometheus text endpoint says."""
    target = url.removeprefix("prometheus+")
    async with httpx.AsyncClient(timeout=timeout) as client:
        response = await client.get(target, headers={"Accept": "text/plain;version=0.0.4"})
        response.raise_for_status()
    found, errors = prometheus.report(response.text, now=time.time())
    if errors:
        log.warning(
            "%s: %d line(s) not in Prometheus text format, e.g. %s", url, len(errors), errors[0]
        )
    return found


def _project_id(slug: str) -> int | None:
    from django.db import connection

    from collector.models import Project

    # Runs in a worker thread once at start: do not leave its connection idle.
    try:
        if slug == settings.DEFAULT_PROJECT:
            return Project.default().pk
        return Project.objects.filter(slug=slug).values_list("pk", flat=True).first()
    finally:
        connection.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"no answer within the timeout (slow or down): {type(exc).__name__}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def _record_failure(project_id, broker, error):
    import psycopg

    from collector.db import conninfo

    with psycopg.connect(conninfo(), connect_timeout=10) as conn, conn.cursor() as cursor:
        samples.broker_failed(cursor, project_id, broker.source, broker.kind, error)


def _record_success(project_id, broker, report: samples.Report, window):
    import psycopg

    from collector.db import conninfo

    with psycopg.connect(conninfo(), connect_timeout=10) as conn, conn.cursor() as cursor:
        samples.store(
            cursor,
            project_id,
            report.readings,
            broker.source,
            window=window,
            complete=True,
            ends=report.ends,
        )
        if report.routes is not None:
            topology.store(cursor, project_id, broker.source, report.routes)
        samples.broker_answered(cursor, project_id, broker.source, broker.kind)


async def poll_broker(
    broker: Broker, project_id: int, timeout: float | None = None, window=None
) -> bool:
    """Poll one broker and store what it said (or that it did not answer); True on success."""
    timeout = float(timeout or settings.BROKER_TIMEOUT_SECONDS)
    try:
        # The overall deadline also covers a broker that accepts the
        # connection and then trickles (many pages, slow answers).
        report = await asyncio.wait_for(broker.poll(timeout), timeout * 3)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        error = _describe(exc)
        # Once per outage in the log; the page shows it for as long as it lasts.
        if broker.source not in _failing:
            log.warning("%s unreachable: %s", broker.source, error)
        _failing.add(broker.source)
        await asyncio.to_thread(_record_failure, project_id, broker, error)
        return False
    await asyncio.to_thread(_record_success, project_id, broker, report, window)
    if broker.source in _failing:
        _failing.discard(broker.source)
        log.info("%s answers again", broker.source)
    return True


def _prune(thinned_until: dt.datetime | None) -> dt.datetime:
    """Retention and thinning of samples; returns how far samples are now thinned."""
    import psycopg

    from collector.db import conninfo

    now = dt.datetime.now(dt.UTC)
    cutoff = now - dt.timedelta(days=settings.RETENTION_DAYS)
    thin_until = now - THIN_AFTER
    with psycopg.connect(conninfo(), connect_timeout=10) as conn, conn.cursor() as cursor:
        deleted = samples.prune(cursor, cutoff)
        # Groups nobody reported for the whole retention period are gone, and so
        # are brokers no longer polled (taken out of EVENTSCOPE_BROKERS).
        cursor.execute("DELETE FROM brokers_groupstate WHERE updated_at < %s", [cutoff])
        cursor.execute("DELETE FROM brokers_brokerstate WHERE updated_at < %s", [cutoff])
        thinned = samples.thin(cursor, max(cutoff, thinned_until or cutoff), thin_until)
    if deleted or thinned:
        log.info("lag samples: %d past retention deleted, %d thinned", deleted, thinned)
    return thin_until


async def _poll_forever(broker: Broker, project_id: int, interval: float, stop: asyncio.Event):
    """Poll one broker every `interval` seconds (or right after a slower poll) until `stop`."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            await poll_broker(broker, project_id)
        except Exception as exc:
            log.error("%s: poll failed: %s", broker.source, _describe(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, interval - (time.monotonic() - started)))


async def _prune_forever(stop: asyncio.Event) -> None:
    thinned_until = None
    while not stop.is_set():
        try:
            thinned_until = await asyncio.to_thread(_prune, thinned_until)
        except Exception as exc:
            log.warning("lag sample retention failed, retrying later: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PRUNE_EVERY_SECONDS)


async def run(stop: asyncio.Event, interval: float | None = None) -> None:
    """The worker loop: poll every configured broker every `interval` seconds until `stop`."""
    interval = float(interval or settings.BROKER_POLL_SECONDS)
    brokers = []
    for broker in configured_brokers():
        project_id = await asyncio.to_thread(_project_id, broker.project)
        if project_id is None:
            log.error("%s: no project %r; not polled", broker.source, broker.project)
            continue
        brokers.append((broker, project_id))
    if brokers:
        log.info("polling %s", ", ".join(b.source for b, _ in brokers))
    tasks = [
        asyncio.create_task(_poll_forever(b, project_id, interval, stop), name=f"poll {b.source}")
        for b, project_id in brokers
    ]
    tasks.append(asyncio.create_task(_prune_forever(stop), name="lag sample retention"))
    try:
        await stop.wait()
    finally:
        # A poll still waiting on a slow broker is abandoned, not waited for.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
