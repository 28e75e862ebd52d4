"""Consumer lag in seconds and the status of a consumer group.

Time lag (three ways, most exact first):
- exact: the broker tells when the oldest waiting message was written
  (Redis stream ids carry milliseconds; a JetStream message has a time);
- interpolated: kafka-lag-exporter's method. Keep a history of
  (end offset, time) per partition; the committed offset was the end offset
  at some moment t, and the lag is now - t, interpolated linearly between the
  two samples around it. Before the oldest sample it is extrapolated from the
  first two distinct points and marked as an estimate; with a single sample
  it is unknown (None), not zero;
- drain estimate: backlog / consume rate, the time until the backlog is gone
  (RabbitMQ and JetStream give depths and counters, not write times).

Status per partition over a sliding window of samples, after Burrow's
consumer lag evaluation rules (linkedin/Burrow wiki), adapted to polling
(a broker that reports when the consumer last acted stands in for Burrow's
commit timestamps):

  ok       no lag now, or unknown;
  rewind   the committed offset went backwards since the last zero-lag
           sample in the window (checked before rule 1, as Burrow does
           since linkedin/Burrow#716; a catch-up after it ends the rewind);
  ok       the lag was zero at some point in the window (Burrow rule 1);
  ok       the window is not filled yet: Burrow judges a full window, so
           until the samples cover half of it (and number at least three)
           nothing worse is said ("collecting samples");
  stalled  the consumer keeps acting (fetching, committing, holding
           deliveries) but its committed offset has not moved across the
           window while lag > 0 (rule 2);
  stopped  no progress and no activity for longer than the window (rule 4);
  error    no progress across the window with lag > 0, not yet that long;
  warning  offsets move, but the lag never shrank across the window (rule 3).

Without any committed offset (a queue scraped without its acknowledgement
counters) only the depth is known: a depth that never fell across a filled
window is `stopped` with no consumer attached and `error` with one.

A group's status is its worst partition's, with that partition named in the
reason. Rewind ranks with error, as Burrow counts a rewinding partition as
an error of its group.
"""

import datetime as dt
import json
from dataclasses import dataclass
from itertools import pairwise

from collector.brokers.models import DRAIN_ESTIMATE, EXACT, INTERPOLATED  # noqa: F401

OK, WARNING, REWIND, ERROR, STALLED, STOPPED = (
    "ok",
    "warning",
    "rewind",
    "error",
    "stalled",
    "stopped",
)
# Worst last: the page sorts groups by this, the group takes its worst partition's.
SEVERITY = {OK: 0, WARNING: 1, REWIND: 3, ERROR: 3, STALLED: 4, STOPPED: 5}
STATUSES = tuple(SEVERITY)

# A window counts as filled when its samples span this share of it and are
# at least this many; before that one slow message between two polls
# would already read as an error.
MIN_COVERAGE = 0.5
MIN_POINTS = 3


@dataclass(frozen=True, slots=True)
class Point:
    """One sample of one partition; times are Unix seconds."""

    time: float
    end_offset: int | None = None
    committed_offset: int | None = None
    lag: int | None = None
    active_at: float | None = None


# ---- time lag -------------------------------------------------------------------


def interpolate_time_lag(
    history: list[tuple[float, int]], committed: int, now: float
) -> tuple[float | None, bool]:
    """(seconds behind, extrapolated) from a history of (time, end offset).

    The answer is now - t where t is the moment the end offset equalled
    `committed`. `extrapolated` is True when t lies before the oldest point
    (then the first two distinct points set the slope) or when the history
    is flat and only a lower bound is known. None when nothing is known.
    """
    points = sorted((t, e) for t, e in history if e is not None)
    if not points:
        return None, False
    # An end offset that went down means the log was recreated; older points
    # describe another log.
    for index in range(len(points) - 1, 0, -1):
        if points[index][1] < points[index - 1][1]:
            points = points[index:]
            break
    last_time, last_end = points[-1]
    if committed >= last_end:
        return 0.0, False
    if len(points) < 2:
        # One sample says nothing about when the waiting messages were
        # written (kafka-lag-exporter also waits for a second point).
        return None, False
    after = next(i for i, (_, end) in enumerate(points) if end > committed)
    if after > 0:
        (t0, e0), (t1, e1) = points[after - 1], points[after]
        moment = t0 + (committed - e0) * (t1 - t0) / (e1 - e0)
        return max(0.0, now - moment), False
    t0, e0 = points[0]
    later = next(((t, e) for t, e in points[1:] if e > e0 and t > t0), None)
    if later is None:
        # Nothing was written while we watched: the waiting messages are at
        # least as old as our oldest sample.
        return max(0.0, now - t0), True
    slope = (later[1] - e0) / (later[0] - t0)
    moment = t0 - (e0 - committed) / slope
    return max(0.0, now - moment), True


def consume_rate(points: list[Point], span: float = 60.0) -> float | None:
    """Messages committed per second over about the last `span` seconds."""
    known = [p for p in points if p.committed_offset is not None]
    if len(known) < 2:
        return None
    last = known[-1]
    first = next((p for p in known if p.time >= last.time - span), known[-2])
    if first is last:
        first = known[-2]
    elapsed = last.time - first.time
    moved = last.committed_offset - first.committed_offset
    if elapsed <= 0 or moved < 0:
        return None
    return moved / elapsed


def drain_seconds(lag: int | None, rate: float | None) -> float | None:
    """Time until a backlog of `lag` messages is consumed at `rate` per second."""
    if lag is None:
        return None
    if lag <= 0:
        return 0.0
    if not rate or rate <= 0:
        return None
    return lag / rate


# ---- status ------------------------------------------------------------------------


def _seconds(value: float) -> str:
    value = max(0, round(value))
    if value < 120:
        return f"{value}s"
    if value < 7200:
        return f"{value // 60}m"
    return f"{value // 3600}h{value % 3600 // 60:02d}m"


def partition_status(points: list[Point], now: float, window: float) -> tuple[str, str]:
    """(status, reason) of one partition from its samples (oldest first)."""
    if not points:
        return OK, "no samples yet"
    latest = points[-1]
    if latest.lag is None:
        return OK, "lag not measured (no committed offset yet)"
    if latest.lag == 0:
        return OK, "caught up"
    inside = [p for p in points if p.time >= now - window] or [latest]
    zeros = [i for i, p in enumerate(inside) if p.lag == 0]
    # A rewind the consumer has since caught up from is over.
    since_caught_up = inside[zeros[-1] :] if zeros else inside
    moved = [p.committed_offset for p in since_caught_up if p.committed_offset is not None]
    for before, after in pairwise(moved):
        if after < before:
            return REWIND, f"committed offset went back from {before} to {after}"
    if zeros:
        return OK, "caught up within the window"
    covered = inside[-1].time - inside[0].time
    if len(inside) < MIN_POINTS or covered < window * MIN_COVERAGE:
        return OK, (
            f"collecting samples ({_seconds(covered)} of the {_seconds(window)} window so far)"
        )
    first = inside[0]
    committed = [p.committed_offset for p in inside if p.committed_offset is not None]
    if len(committed) < 2:
        return _depth_status(inside, latest)
    if committed[-1] == committed[0]:
        last_move = _last_move(points)
        stuck_for = now - last_move
        if latest.active_at is not None and latest.active_at >= first.time:
            return STALLED, (
                f"consumer active {_seconds(now - latest.active_at)} ago but the committed "
                f"offset has stayed at {committed[-1]} for {_seconds(stuck_for)} "
                f"with lag {latest.lag}"
            )
        last_commit = max(last_move, latest.active_at or last_move)
        if now - last_commit > window:
            return STOPPED, (
                f"no progress and no consumer activity for {_seconds(now - last_commit)} "
                f"(window {_seconds(window)}), lag {latest.lag}"
            )
        return ERROR, (f"committed offset has not moved from {committed[-1]} with lag {latest.lag}")
    lags = [p.lag for p in inside if p.lag is not None]
    if len(lags) >= MIN_POINTS and all(b >= a for a, b in pairwise(lags)):
        return WARNING, f"consuming, but lag never shrank in the window ({lags[0]} → {lags[-1]})"
    return OK, "consuming"


def _depth_status(inside: list[Point], latest: Point) -> tuple[str, str]:
    """Judged on depth alone, when nothing says how far the consumer got."""
    depths = [p.lag for p in inside if p.lag is not None]
    if any(after < before for before, after in pairwise(depths)):
        return OK, "consuming (the depth falls at times; no acknowledgement counter)"
    trend = f"({depths[0]} → {depths[-1]})"
    if latest.active_at is not None and latest.active_at >= inside[0].time:
        return ERROR, (
            f"depth never fell in the window {trend} though consumers are attached "
            "(no acknowledgement counter to tell their progress)"
        )
    return STOPPED, f"depth never fell in the window {trend} and no consumer is attached"


def _last_move(points: list[Point]) -> float:
    """When the committed offset last changed (the oldest sample if never seen)."""
    known = [p for p in points if p.committed_offset is not None]
    for before, after in zip(reversed(known[:-1]), reversed(known[1:]), strict=False):
        if after.committed_offset != before.committed_offset:
            return after.time
    return known[0].time if known else points[0].time


def group_status(partitions: list[dict]) -> tuple[str, str]:
    """The worst partition's status, with the partition named in the reason."""
    if not partitions:
        return OK, ""
    worst = max(partitions, key=lambda p: SEVERITY.get(p["status"], 0))
    if worst["status"] == OK:
        return OK, ""
    where = f"partition {worst['partition']}: " if worst["partition"] != "" else ""
    others = sum(1 for p in partitions if p["status"] != OK) - 1
    more = f" (+{others} more partition{'s' if others > 1 else ''} not ok)" if others > 0 else ""
    return worst["status"], f"{where}{worst['status']}: {worst['reason']}{more}"


# ---- reading the present -------------------------------------------------------------

# What a broker calls the space its channel names live in; /api/lag and the
# pages show it under this name.
NAMESPACE_FIELDS = {
    "rabbitmq": "vhost",
    "nats": "account",
    # A Pulsar tenant/namespace, a Service Bus or Event Hubs namespace, a
    # Google Cloud project.
    "pulsar": "namespace",
    "servicebus": "namespace",
    "eventhubs": "namespace",
    "gcp_pubsub": "namespace",
}
_FIELDS = tuple(dict.fromkeys(NAMESPACE_FIELDS.values()))


def namespace_fields(system: str, namespace: str) -> dict:
    """{"vhost": …, "account": …, "namespace": …} of one group: its namespace
    under the broker's name, the other fields None."""
    fields = dict.fromkeys(_FIELDS)
    field = NAMESPACE_FIELDS.get(system)
    if field:
        fields[field] = namespace or None
    return fields


def namespace_of(item: dict) -> str:
    """The stored namespace of an item of `current()`."""
    field = NAMESPACE_FIELDS.get(item["system"])
    return (item.get(field) or "") if field else ""


def _iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def current(project_id: int, cursor=None) -> list[dict]:
    """The present lag of every consumer group of a project, worst first.

    One item per (system, vhost/account, channel, group), the same shape as
    /api/lag: {"system", "vhost", "account", "channel", "group", "lag",
    "lag_seconds", "lag_seconds_method", "estimated", "consume_rate", "status",
    "reason", "partitions": [...], "updated_at", "reported_at", "error"} where
    `vhost` is the RabbitMQ vhost and `account` the NATS account (None
    elsewhere), `reported_at` is when the broker last listed the group itself
    (earlier than `updated_at` for a Kafka group without members, held at its
    last committed offsets), and `error` says "unreachable since …" when the
    broker that reports this group stopped answering. Reads through `cursor` when given
    (a psycopg cursor of a background loop), else Django's connection.
    """
    if cursor is None:
        from django.db import connection

        with connection.cursor() as cursor:
            return current(project_id, cursor)
    cursor.execute(
        """
        SELECT g.system, g.channel, g.consumer_group, g.lag, g.lag_seconds,
               g.lag_seconds_method, g.estimated, g.status, g.reason, g.partitions,
               g.updated_at, b.error, b.error_since, g.consume_rate, g.namespace,
               g.reported_at
        FROM brokers_groupstate g
        LEFT JOIN brokers_brokerstate b
          ON b.project_id = g.project_id AND b.source = g.source AND b.error <> ''
        WHERE g.project_id = %s
        """,
        [project_id],
    )
    rows = cursor.fetchall()
    items = []
    for row in rows:
        (system, channel, group, lag, lag_seconds, method, estimated, status, reason) = row[:9]
        partitions, updated_at, error, error_since, rate, namespace, reported_at = row[9:]
        if isinstance(partitions, str):
            partitions = json.loads(partitions)
        items.append(
            {
                "system": system,
                **namespace_fields(system, namespace),
                "channel": channel,
                "group": group,
                "lag": lag,
                "lag_seconds": lag_seconds,
                "lag_seconds_method": method or None,
                "estimated": estimated,
                "consume_rate": rate,
                "status": status,
                "reason": reason,
                "partitions": partitions,
                "updated_at": _iso(updated_at),
                "reported_at": _iso(reported_at),
                "error": f"unreachable since {_iso(error_since)}: {error}" if error else None,
            }
        )
    items.sort(key=sort_key)
    return items


def sort_key(item: dict):
    """Worst status first, then the most seconds behind, then the most messages."""
    return (
        -SEVERITY.get(item["status"], 0),
        -(item["lag_seconds"] or 0),
        -(item["lag"] or 0),
        item["system"],
        namespace_of(item),
        item["channel"],
        item["group"],
    )
