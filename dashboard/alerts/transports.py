"""Webhook formats. Each is a `Transport`: it renders a notification into the
body it posts (`render`, done once when the delivery is queued, so retries
send the same bytes) and sends it (`notify`) through the one outbound client.

`notify` returns the response on a 2xx and otherwise raises TransportError;
`permanent=True` means retrying cannot help (a 4xx other than 408/429, a
refused address), else the sender retries with backoff, no sooner than
`retry_after` when the receiver said so.
"""

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import urllib.parse
from dataclasses import dataclass

import httpx
from django.conf import settings

from dashboard.alerts import outbound
from dashboard.alerts.models import Format, secret_key

# Alertmanager's "not resolved yet" endsAt.
ZERO_TIME = "0001-01-01T00:00:00Z"


class TransportError(Exception):
    def __init__(
        self,
        message: str,
        permanent: bool = False,
        status_code: int | None = None,
        retry_after: float | None = None,
        duration_ms: float = 0.0,
    ):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status_code = status_code
        self.retry_after = retry_after
        self.duration_ms = duration_ms


@dataclass
class Notification:
    """What happened, independent of format."""

    event: str  # firing | repeat | resolved | test
    rule: dict  # id, name, kind
    project: dict  # id, slug, name
    alert: dict  # fingerprint, state, labels, value, summary, started_at, resolved_at, url
    time: dt.datetime

    @property
    def status(self) -> str:
        return "resolved" if self.event == "resolved" else "firing"


def rfc3339(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def retry_after_seconds(value: str | None, now: dt.datetime) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def _dumps(data) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


class Transport:
    """Base of the webhook formats."""

    content_type = "application/json"

    def __init__(self, webhook):
        self.webhook = webhook

    def render(self, notification: Notification) -> str:
        raise NotImplementedError

    def target_url(self) -> str:
        """Where the body is posted: the webhook's URL, unless the format
        derives its endpoint from it."""
        return self.webhook.url

    def headers(self, message_id: str, body: str, now: dt.datetime) -> dict[str, str]:
        return {"Content-Type": self.content_type}

    def notify(self, message_id: str, body: str, now: dt.datetime) -> outbound.Response:
        """POST the body; returns the 2xx response or raises TransportError."""
        headers = self.headers(message_id, body, now)
        started = dt.datetime.now(dt.UTC)

        def took() -> float:
            return (dt.datetime.now(dt.UTC) - started).total_seconds() * 1000

        try:
            response = outbound.post(
                self.target_url(), body.encode(), headers, ca_bundle=self.webhook.ca_bundle
            )
        except outbound.Refused as exc:
            raise TransportError(str(exc), permanent=True, duration_ms=took()) from None
        except httpx.TimeoutException:
            raise TransportError("timed out", duration_ms=took()) from None
        except (httpx.TransportError, OSError) as exc:
            raise TransportError(f"connection failed: {exc}", duration_ms=took()) from None
        code = response.status_code
        if 200 <= code < 300:
            return response
        excerpt = response.body[:200].decode("utf-8", "replace").strip()
        message = f"HTTP {code}" + (f": {excerpt}" if excerpt else "")
        retryable = code >= 500 or code in (408, 429)
        raise TransportError(
            message,
            permanent=not retryable,
            status_code=code,
            retry_after=retry_after_seconds(response.headers.get("retry-after"), now)
            if retryable
            else None,
            duration_ms=response.elapsed_ms,
        )


class JsonTransport(Transport):
    """Eventscope's own JSON, signed by the Standard Webhooks scheme."""

    def render(self, notification):
        return _dumps(
            {
                "type": "webhook.test"
                if notification.event == "test"
                else f"alert.{notification.event}",
                "timestamp": rfc3339(notification.time),
                "data": {
                    "project": notification.project,
                    "rule": notification.rule,
                    "alert": notification.alert,
                },
            }
        )

    def headers(self, message_id, body, now):
        return {
            **super().headers(message_id, body, now),
            **signature_headers(self.webhook.secret, message_id, body, now),
        }


def signature_headers(secret: str, message_id: str, body: str, now: dt.datetime) -> dict:
    """The Standard Webhooks headers of one message: id, timestamp and v1 signature."""
    timestamp = str(int(now.timestamp()))
    return {
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + sign(secret, message_id, timestamp, body),
    }


def sign(secret: str, message_id: str, timestamp: str, body: str) -> str:
    """Base64 HMAC-SHA256 of "id.timestamp.body" under the whsec_ secret's key."""
    content = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class AlertmanagerTransport(Transport):
    """The Alertmanager webhook JSON (version 4), one alert per message, so
    receivers built for Alertmanager (ticketing, paging) work unchanged."""

    def render(self, notification):
        alert = notification.alert
        labels = {"alertname": notification.rule["name"], **alert["labels"]}
        annotations = {"summary": alert.get("summary") or notification.rule["name"]}
        resolved = notification.status == "resolved"
        ends_at = rfc3339(notification.time) if resolved else ZERO_TIME
        return _dumps(
            {
                "version": "4",
                "groupKey": f'{{}}:{{rule_id="{notification.rule["id"]}", '
                f'fingerprint="{alert["fingerprint"]}"}}',
                "truncatedAlerts": 0,
                "status": notification.status,
                "receiver": self.webhook.name,
                "groupLabels": {"alertname": notification.rule["name"]},
                "commonLabels": labels,
                "commonAnnotations": annotations,
                # Alertmanager's own address there; ours is the UI's base.
                "externalURL": settings.PUBLIC_URL,
                "alerts": [
                    {
                        "status": notification.status,
                        "labels": labels,
                        "annotations": annotations,
                        "startsAt": alert.get("started_at") or rfc3339(notification.time),
                        "endsAt": alert.get("resolved_at") or ends_at,
                        "generatorURL": alert.get("url", ""),
                        "fingerprint": alert["fingerprint"],
                    }
                ],
            }
        )


ALERTS_PATH = "/api/v2/alerts"
# Alertmanager keeps an alert active until its endsAt. Prometheus sets it to
# 4 x max(evaluation interval, resend delay) ahead, so that three lost
# re-sends in a row do not end an alert that still fires.
PUSH_RESEND_SECONDS = 60
PUSH_VALIDITY_FACTOR = 4


def push_url(url: str) -> str:
    """An Alertmanager's alerts endpoint from its base URL (which may carry a
    path prefix, as behind a proxy) or from the endpoint itself."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.rstrip("/")
    if not path.endswith(ALERTS_PATH):
        path += ALERTS_PATH
    return urllib.parse.urlunsplit(parts._replace(path=path))


def push_validity() -> dt.timedelta:
    """How far ahead a firing alert's endsAt is set."""
    every = max(settings.ALERT_EVALUATION_SECONDS, PUSH_RESEND_SECONDS)
    return dt.timedelta(seconds=PUSH_VALIDITY_FACTOR * every)


class AlertmanagerPushTransport(Transport):
    """Alertmanager's own API (POST /api/v2/alerts), as Prometheus feeds it:
    a list of postable alerts. Alertmanager then groups, routes, inhibits and
    silences Eventscope's alerts with everyone else's. It forgets an alert at
    its endsAt, so a firing alert is re-sent about every minute (evaluate.py)
    with endsAt a few minutes ahead, and a resolved one once with endsAt = the
    time it ended."""

    SEVERITY = "warning"

    def target_url(self):
        return push_url(self.webhook.url)

    def render(self, notification):
        alert = notification.alert
        labels = {
            "alertname": notification.rule["name"],
            "severity": self.SEVERITY,
            **{k: str(v) for k, v in alert["labels"].items()},
            "project": notification.project["slug"],
        }
        annotations = {"summary": alert.get("summary") or notification.rule["name"]}
        if notification.alert.get("value") is not None:
            annotations["value"] = f"{alert['value']:g}"
        if notification.status == "resolved":
            ends_at = alert.get("resolved_at") or rfc3339(notification.time)
        else:
            ends_at = rfc3339(notification.time + push_validity())
        return _dumps(
            [
                {
                    "labels": labels,
                    "annotations": annotations,
                    "startsAt": alert.get("started_at") or rfc3339(notification.time),
                    "endsAt": ends_at,
                    "generatorURL": alert.get("url", ""),
                }
            ]
        )


def slack_escape(text: str) -> str:
    """Text as Slack shows it literally: &, < and > are its markup (<!channel>
    pings everyone, <url|text> is a link), and names and summaries come
    from telemetry anyone able to send events controls."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackTransport(Transport):
    """A Slack incoming webhook (also Mattermost, Rocket.Chat...): {"text": ...}."""

    ICONS = {"firing": "🔥", "repeat": "🔁", "resolved": "✅", "test": "🧪"}

    def render(self, notification):
        alert = notification.alert
        state = {"repeat": "still firing"}.get(notification.event, notification.event)
        labels = slack_escape(
            ", ".join(f"{k}={v}" for k, v in alert["labels"].items() if k != "project")
        )
        name, summary = notification.rule["name"], alert.get("summary") or ""
        text = (
            f"{self.ICONS.get(notification.event, '')} *{state.upper()}* "
            f"{slack_escape(name)}: {slack_escape(summary)}"
        ).strip()
        if labels:
            text += f"\n{labels}"
        if alert.get("url"):
            text += f"\n<{alert['url']}|Open in Eventscope>"
        return _dumps({"text": text})


TRANSPORTS: dict[str, type[Transport]] = {
    Format.JSON: JsonTransport,
    Format.ALERTMANAGER: AlertmanagerTransport,
    Format.SLACK: SlackTransport,
    Format.ALERTMANAGER_PUSH: AlertmanagerPushTransport,
}


def transport_for(webhook) -> Transport:
    return TRANSPORTS[webhook.format](webhook)
