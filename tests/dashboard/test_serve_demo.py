"""`serve --demo` as a newcomer meets it: a real subprocess on free ports, its
own database, and every page of the dashboard fed by the demo shop."""

import json
import re
import time

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from collector.models import ApiToken, Project, Scope
from dashboard.accounts.models import Membership, Role
from dashboard.alerts.models import AlertRule, Format, Webhook
from dashboard.management.commands.serve import Command as Serve
from tests.http_sink import LocalHttpServer, QuietHandler
from tests.test_commands import command_env, free_port, manage, terminate, wait_http

DEMO_RULE = "analytics is behind (demo)"
CYCLE_SECONDS = 40  # slow for 30 s, then fast for 10 s
# Five cycles: the test stops as soon as lag has left ok and come back and
# the alert has fired and resolved (one to two cycles on a quiet machine);
# a loaded machine evaluates lag late, and one more cycle is not a failure.
DEADLINE_SECONDS = 200
CSRF = "a" * 32


class WebhookSink(LocalHttpServer):
    """The outside world a replay goes to: keeps every body it receives."""

    def __init__(self):
        super().__init__(_SinkHandler)
        self.bodies: list[dict] = []

    @property
    def url(self):
        return f"{self.base_url}/hook"


class _SinkHandler(QuietHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.bodies.append(json.loads(body))
        self.send_response(204)
        self.end_headers()


def _start(*extra, **env):
    web, http_port, grpc_port = free_port(), free_port(), free_port()
    process = manage(
        "serve", "--demo",
        "--port", str(web),
        "--otlp-http-port", str(http_port),
        "--otlp-grpc-port", str(grpc_port),
        *extra,
        env=command_env(**{"EVENTSCOPE_INGEST_AUTH": "off", **env}),
    )  # fmt: skip
    base = f"http://127.0.0.1:{web}"
    wait_http(f"{base}/healthz", process)
    return process, base


def _session_headers(user) -> dict:
    """A signed-in editor's browser: session cookie, CSRF cookie and header."""
    client = Client()
    client.force_login(user)
    session = client.cookies["sessionid"].value
    return {"cookie": f"sessionid={session}; csrftoken={CSRF}", "x-csrftoken": CSRF}


def _came_back(statuses: list[str]) -> bool:
    """A lag status other than ok was followed by ok."""
    return any(a != "ok" and b == "ok" for a, b in zip(statuses, statuses[1:], strict=False))


@pytest.mark.timeout(DEADLINE_SECONDS + 60)
def test_serve_demo_fills_lag_failures_and_alerts(telemetry_db):
    project = Project.default()
    _, read_token = ApiToken.issue(project, "test read", Scope.READ)
    editor = get_user_model().objects.create_user("ed", password="correct horse battery")
    Membership.objects.create(user=editor, project=project, role=Role.EDITOR)
    with WebhookSink() as sink:
        webhook = Webhook.objects.create(
            project=project, name="replays", url=sink.url, format=Format.JSON
        )
        process, base = _start(
            "--demo-cycle-seconds", str(CYCLE_SECONDS),
            EVENTSCOPE_ALERT_EVALUATION_SECONDS="1",
            EVENTSCOPE_WEBHOOK_ALLOW_PRIVATE="1",
        )  # fmt: skip
        try:
            api = httpx.Client(
                base_url=base, headers={"authorization": f"Bearer {read_token}"}, timeout=10
            )
            statuses, alert_states, replayed = [], set(), None
            deadline = time.monotonic() + DEADLINE_SECONDS
            while time.monotonic() < deadline:
                lag = api.get("/api/lag").json()["items"]
                analytics = [i for i in lag if i["group"] == "analytics"]
                if analytics:
                    status = analytics[0]["status"]
                    if not statuses or statuses[-1] != status:
                        statuses.append(status)
                alerts = api.get("/api/alerts").json()["items"]
                alert_states |= {a["state"] for a in alerts if a["rule_name"] == DEMO_RULE}
                if replayed is None:
                    replayed = _replay_a_dead_letter(api, base, editor, webhook, sink)
                if (
                    _came_back(statuses)
                    and {"firing", "resolved"} <= alert_states
                    and replayed is not None
                ):
                    break
                time.sleep(1)
            # Every group of the shop, and the queue, is on the lag page.
            groups = {(i["system"], i["channel"], i["group"]) for i in lag}
            assert {("kafka", "shop.orders", g) for g in ("payments", "shipping", "email")} | {
                ("rabbitmq", "payments.captured", "")
            } <= groups, groups
        finally:
            output = terminate(process)
    # Lag left ok and came back; the demo goes on cycling, so where it is
    # when the other checks are done is chance.
    assert _came_back(statuses), (statuses, output[-3000:])
    assert {"firing", "resolved"} <= alert_states, (alert_states, output[-3000:])
    assert replayed is not None, "no dead-lettered failure could be replayed"


def _replay_a_dead_letter(api, base, editor, webhook, sink):
    """Find a dead-lettered failure whose event has a payload, replay it from
    a signed-in editor's session; returns the delivered CloudEvent or None."""
    failures = api.get("/api/failures", params={"window": "1h"}).json()["items"]
    for failure in failures:
        if failure["stage"] != "deadlettered":
            continue
        event = api.get(f"/api/events/{failure['event_id']}").json()
        envelope = event.get("envelope")
        if not envelope or not envelope.get("data"):
            continue
        answer = httpx.post(
            f"{base}/api/events/{failure['event_id']}/replay",
            json={"webhook": webhook.pk},
            headers=_session_headers(editor),
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["status"] == "delivered", answer.json()
        [sent] = [b for b in sink.bodies if b["id"] == failure["event_id"]]
        assert sent["data"] == envelope["data"] and sent["data"]["order"].startswith("ord-")
        return sent
    return None


@pytest.mark.parametrize("auth", ["off", "required"])
def test_serve_demo_starts_without_warnings_and_says_how_to_begin(telemetry_db, auth):
    process, base = _start(EVENTSCOPE_INGEST_AUTH=auth)
    try:
        user = get_user_model().objects.create_user("vera", password="correct horse battery")
        Membership.objects.create(user=user, project=Project.default(), role=Role.VIEWER)
        browser = httpx.Client(base_url=base, headers=_session_headers(user), timeout=10)
        time.sleep(3)  # the demo's first exports arrive
        assert httpx.get(f"{base}/login/").status_code == 200
        for page in ("/", "/lag/", "/failures/", "/alerts/"):
            assert browser.get(page).status_code == 200, page
        html = browser.get("/").text
        assets = set(re.findall(r'(?:src|href)="(/static/[^"]+)"', html))
        assert assets
        for asset in assets:
            answer = browser.get(asset)
            assert answer.status_code == 200 and answer.content, asset
        # Static files stream asynchronously: whole, in part, or headers only.
        whole = browser.get("/static/css/app.css").content
        part = browser.get("/static/css/app.css", headers={"range": "bytes=0-9"})
        assert part.status_code == 206 and part.content == whole[:10]
        head = browser.head("/static/css/app.css")
        assert head.status_code == 200 and int(head.headers["content-length"]) == len(whole)
    finally:
        output = terminate(process)
    assert "Warning" not in output and "WARNING" not in output, output
    assert "No directory at" not in output, output
    assert re.search(r"dashboard on http://127\.0\.0\.1:\d+/", output), output
    assert "manage.py createuser" in output and "createsuperuser" in output, output
    assert "the demo shop sends to project 'default'" in output, output
    assert "/v1/metrics" in output and "OTLP/gRPC" in output, output
    if auth == "off":
        assert "EVENTSCOPE_INGEST_AUTH=required" in output, output
    else:
        assert "createtoken" in output, output


def test_the_demo_alert_rule_is_made_once_and_sends_nowhere(db):
    Serve()._demo_alert_rule()
    Serve()._demo_alert_rule()  # the next start
    [rule] = AlertRule.objects.filter(project=Project.default())
    assert (rule.name, rule.kind, rule.enabled) == (DEMO_RULE, "lag_status", True)
    assert rule.params["group"] == "analytics" and rule.params["channel"] == "shop.orders"
    assert not rule.webhooks.exists()


@pytest.mark.parametrize(
    "arguments, problem",
    [
        (["--demo-cycle-seconds", "60"], "--demo-cycle-seconds goes with --demo"),
        (["--demo", "--demo-cycle-seconds", "0"], "--demo-cycle-seconds must be positive"),
        (["--demo", "--demo-cycle-seconds", "inf"], "--demo-cycle-seconds must be positive"),
    ],
)
def test_serve_explains_bad_demo_arguments(arguments, problem):
    with pytest.raises(CommandError, match=problem):
        call_command("serve", *arguments)
