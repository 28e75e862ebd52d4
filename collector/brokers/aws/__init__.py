"""Amazon's messaging services, read through boto3: one module per service.

URLs (CONTRACT §7): `sqs://<region>`, `sns://<region>`, `kinesis://<region>`,
`eventbridge://<region>`, `lambda://<region>`, each with an optional
`?endpoint_url=http://host:port` (LocalStack, moto, a VPC endpoint).
Credentials come from boto3's standard chain (environment, shared files,
SSO, the instance or task role); none are ever put in the URL.

boto3 is synchronous: every read runs in a worker thread, with the poll's
timeout on connecting and reading and few retries, so a slow region does
not hold up the other brokers.
"""

import asyncio
import datetime as dt
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from collector.brokers.samples import Report

# How far back CloudWatch is asked for the latest figure of a metric; SQS
# and Lambda publish every minute, a quiet EventBridge rule less often.
METRIC_LOOKBACK = dt.timedelta(minutes=15)
METRIC_PERIOD = dt.timedelta(minutes=1)
# GetMetricData takes at most this many queries per call.
METRIC_QUERIES_PER_CALL = 500


def options(url: str) -> tuple[str, dict]:
    """(region, query parameters) of an AWS broker URL."""
    parts = urlsplit(url)
    return parts.hostname or "", dict(parse_qsl(parts.query))


def client(url: str, service: str, timeout: float):
    """A boto3 client for `service` in the URL's region, through its endpoint_url if any."""
    import boto3
    from botocore.config import Config

    region, query = options(url)
    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": 2, "mode": "standard"},
        user_agent_extra="eventscope-poller",
    )
    return boto3.session.Session().client(
        service, region_name=region, endpoint_url=query.get("endpoint_url") or None, config=config
    )


def pages(call: Callable, key: str, token_in: str = "NextToken", token_out: str = "NextToken",
          **kwargs) -> list:  # fmt: skip
    """Every item under `key` of a listing call, page after page."""
    found, token = [], None
    while True:
        response = call(**kwargs, **({token_in: token} if token else {}))
        found.extend(response.get(key) or [])
        token = response.get(token_out)
        if not token:
            return found


def latest_metrics(cloudwatch, namespace: str, queries: list[tuple[str, str, dict, str]],
                   now: dt.datetime) -> dict[str, float]:  # fmt: skip
    """{id: newest value} of CloudWatch metrics over the last METRIC_LOOKBACK.

    `queries` holds (id, metric name, dimensions, statistic); ids must be
    unique, start with a lower-case letter and hold only letters, digits and
    underscores. Metrics with no data point in the lookback are left out:
    unknown, not zero.
    """
    found: dict[str, float] = {}
    for start in range(0, len(queries), METRIC_QUERIES_PER_CALL):
        chunk = queries[start : start + METRIC_QUERIES_PER_CALL]
        request = [
            {
                "Id": query_id,
                "MetricStat": {
                    "Metric": {
                        "Namespace": namespace,
                        "MetricName": metric,
                        "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                    },
                    "Period": int(METRIC_PERIOD.total_seconds()),
                    "Stat": statistic,
                },
                "ReturnData": True,
            }
            for query_id, metric, dimensions, statistic in chunk
        ]
        for result in pages(
            cloudwatch.get_metric_data,
            "MetricDataResults",
            MetricDataQueries=request,
            StartTime=now - METRIC_LOOKBACK,
            # EndTime is exclusive and CloudWatch (and moto) cut it to whole
            # seconds: a point recorded in this very second, or in the
            # current minute's period, would be left out of "now".
            EndTime=now + METRIC_PERIOD,
            ScanBy="TimestampDescending",
        ):
            values = result.get("Values") or []
            if values:
                found[result["Id"]] = float(values[0])
    return found


def metric_id(prefix: str, index: int) -> str:
    return f"{prefix}{index}"


def poller(read: Callable[[str, float], Report]):
    """The async `poll(url, timeout)` of a synchronous `read(url, timeout)`."""

    async def poll(url: str, timeout: float) -> Report:
        return await asyncio.to_thread(read, url, timeout)

    poll.__doc__ = read.__doc__
    return poll
