"""/api/openapi.json describes every endpoint of the JSON API contract."""

import json
import re
from pathlib import Path

import pytest
from django.urls import Resolver404, resolve

CONTRACT = {
    "/api/flow": {"get"},
    "/api/traces/{trace_id}": {"get"},
    "/api/events/{event_id}": {"get"},
    "/api/events/{event_id}/replay": {"post"},
    "/api/events/{event_id}/replays": {"get"},
    "/api/failures": {"get"},
    "/api/lag": {"get"},
    "/api/alert-rules": {"get", "post"},
    "/api/alert-rules/{id}": {"get", "put", "delete"},
    "/api/webhooks": {"get", "post"},
    "/api/webhooks/{id}": {"get", "put", "delete"},
    "/api/webhooks/{id}/test": {"post"},
    "/api/alerts": {"get"},
    "/api/audit": {"get"},
}


def test_it_describes_every_contract_endpoint(client, db):
    document = client.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path, methods in CONTRACT.items():
        assert set(paths[path]) == methods, path


def test_every_reference_resolves(client, db):
    document = client.get("/api/openapi.json").json()
    text = client.get("/api/openapi.json").content.decode()
    for name in set(re.findall(r'"#/components/schemas/([A-Za-z]+)"', text)):
        assert name in document["components"]["schemas"], name


def test_the_core_endpoints_it_describes_are_served():
    for path in ("/api/flow", f"/api/traces/{'a' * 32}", "/api/events/x", "/api/failures"):
        try:
            resolve(path)
        except Resolver404:
            raise AssertionError(f"{path} is described but not routed") from None


# ---- Nothing described goes away unnoticed ------------------------------------
#
# Each feature describes its own endpoints (dashboard/<feature>/openapi.py)
# and dashboard/openapi.py merges them. The snapshot is the document as it
# was when it was one module: every path, operation, parameter and schema in
# it must still be there, unchanged. Additions are fine; a deliberate change
# updates the snapshot in the same commit.

SNAPSHOT = Path(__file__).resolve().parent.parent / "fixtures" / "openapi-before.json"


def lost(before, now, where="") -> list[str]:
    """What of `before` is missing or different in `now` (what `now` adds is fine)."""
    if isinstance(before, dict):
        if not isinstance(now, dict):
            return [f"{where or '/'}: was an object, now {json.dumps(now)[:80]}"]
        problems = []
        for key, value in before.items():
            if key not in now:
                problems.append(f"{where}/{key}: removed")
            else:
                problems += lost(value, now[key], f"{where}/{key}")
        return problems
    if isinstance(before, list):
        if not isinstance(now, list):
            return [f"{where}: was a list, now {json.dumps(now)[:80]}"]
        return [
            f"{where}[{i}]: {json.dumps(item)[:120]} removed or changed"
            for i, item in enumerate(before)
            if not any(not lost(item, candidate) for candidate in now)
        ]
    return [] if before == now else [f"{where}: {before!r} became {now!r}"]


def test_the_document_keeps_every_path_and_schema_of_the_snapshot(client, db):
    before = json.loads(SNAPSHOT.read_text())
    now = client.get("/api/openapi.json").json()
    problems = lost(before["paths"], now["paths"], "paths")
    problems += lost(before["components"], now["components"], "components")
    assert not problems, "\n".join(problems)


def test_the_snapshot_comparison_allows_additions_and_catches_the_rest():
    before = {"p": {"get": {"parameters": [{"name": "a"}], "required": ["x"]}}}
    added = {"p": {"get": {"parameters": [{"name": "a"}, {"name": "b"}], "required": ["x", "y"]}}}
    assert lost(before, added) == []
    assert lost(before, {"p": {}}) == ["/p/get: removed"]
    assert lost(before, {"p": {"get": {"parameters": [{"name": "b"}], "required": ["x"]}}})
    assert lost(before, {"p": {"get": {"parameters": [{"name": "a"}], "required": "x"}}})


# ---- Real responses against the document -------------------------------------
#
# Drift is when a response grows a field the document does not describe (or
# the document promises one a response lacks). The walk below checks every
# real response of every endpoint: each property present is declared, each
# required property is present, types and enums hold, recursively.


def _resolve(schema, document):
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = document["components"]["schemas"][name]
    return schema


def _type_ok(value, kind) -> bool:
    return {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[kind]


def schema_errors(value, schema, document, where="$") -> list[str]:
    """What is wrong with `value` under `schema` (empty when it fits)."""
    import datetime as dt

    schema = _resolve(schema, document)
    if "oneOf" in schema:
        tried = [schema_errors(value, s, document, where) for s in schema["oneOf"]]
        return [] if any(not t for t in tried) else min(tried, key=len)
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_type_ok(value, k) for k in kinds):
            return [f"{where}: {value!r} is not {'/'.join(kinds)}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    if schema.get("format") == "date-time" and isinstance(value, str):
        try:
            dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return [f"{where}: {value!r} is not a date-time"]
    errors = []
    if isinstance(value, dict) and "properties" in schema:
        declared = schema["properties"]
        extra = schema.get("additionalProperties", False)
        for key, item in value.items():
            if key in declared:
                errors += schema_errors(item, declared[key], document, f"{where}.{key}")
            elif extra is False:
                errors.append(f"{where}.{key}: not declared")
        for key in schema.get("required", ()):
            if key not in value:
                errors.append(f"{where}.{key}: required but missing")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], document, f"{where}[{i}]")
    return errors


def assert_documented(document, path, method, response):
    operation = document["paths"][path][method]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {path}: {status} is not documented"
    content = operation["responses"][status].get("content")
    if content is None:
        assert not response.content, f"{method} {path}: {status} has an undocumented body"
        return
    errors = schema_errors(response.json(), content["application/json"]["schema"], document)
    assert not errors, f"{method} {path} {status}:\n" + "\n".join(errors[:20])


@pytest.fixture
def everything(project, editor):
    """A bit of every kind of data, stored the way production stores it."""
    import datetime as dt

    from collector.brokers import samples
    from collector.brokers.samples import Reading
    from dashboard.alerts.evaluate import evaluate_rule
    from dashboard.alerts.models import AlertRule, Webhook
    from tests.dashboard.world import dead_lettered_order, events_batch, store, store_order

    ids = store_order(project.id, event_id="evt-doc")
    store(
        events_batch(
            [
                {
                    "specversion": "1.0",
                    "id": "ord-doc",
                    "source": "/shop/orders",
                    "type": "order.created",
                    "eschannel": "orders",
                    "essystem": "rabbitmq",
                    "data": {"order": 1},
                },
                dead_lettered_order("ord-doc"),
            ],
            project.id,
        )
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for age, committed in ((120, 100), (60, 150), (0, 200)):
        samples.store_sync(
            project.id,
            [
                Reading(
                    "kafka",
                    "orders",
                    "billing",
                    "0",
                    end_offset=220,
                    committed_offset=committed,
                    time=(now - dt.timedelta(seconds=age)).timestamp(),
                )
            ],
            "test",
            now=now - dt.timedelta(seconds=age),
        )
    hook = Webhook.objects.create(project=project, name="ops", url="https://example.com/hook")
    rule = AlertRule.objects.create(
        project=project,
        name="Any failure",
        kind="failed_events",
        params={"threshold": 0, "window_seconds": 3600},
        for_seconds=0,
    )
    rule.webhooks.add(hook)
    evaluate_rule(rule.pk, now)
    return {"trace": ids["trace"], "rule": rule.pk, "hook": hook.pk}


@pytest.mark.usefixtures("telemetry_db")
def test_every_endpoint_answers_as_the_document_says(client, editor, everything):
    document = client.get("/api/openapi.json").json()
    client.force_login(editor)
    reads = [
        ("/api/flow", "/api/flow?window=1h"),
        ("/api/flow", "/api/flow?window=1h&limit=1"),
        (
            "/api/flow/series",
            "/api/flow/series?window=1h&source=channel:kafka:orders&target=service:payments"
            "&kind=consume&group=payments",
        ),
        ("/api/flow/series", "/api/flow/series?window=7d&node=service:email"),
        ("/api/flow/series", "/api/flow/series?window=1h&kind=sideways"),
        ("/api/traces/{trace_id}", f"/api/traces/{everything['trace']}"),
        ("/api/traces/{trace_id}", f"/api/traces/{'ab' * 16}"),
        ("/api/traces/{trace_id}", "/api/traces/nope"),
        ("/api/events/{event_id}", "/api/events/evt-doc"),
        ("/api/events/{event_id}", "/api/events/ord-doc?source=/shop/orders"),
        ("/api/events/{event_id}", "/api/events/missing"),
        ("/api/failures", "/api/failures?limit=1"),
        ("/api/failures", "/api/failures?group_by=error"),
        ("/api/failures", "/api/failures?limit=0"),
        ("/api/lag", "/api/lag"),
        ("/api/alert-rules", "/api/alert-rules"),
        ("/api/alert-rules/{id}", f"/api/alert-rules/{everything['rule']}"),
        ("/api/webhooks", "/api/webhooks"),
        ("/api/webhooks/{id}", f"/api/webhooks/{everything['hook']}"),
        ("/api/alerts", "/api/alerts"),
    ]
    for path, url in reads:
        response = client.get(url)
        assert response.status_code < 500, url
        assert_documented(document, path, "get", response)
    for url in ("/api/alerts", "/api/lag", "/api/failures", "/api/failures?group_by=error"):
        assert client.get(url).json()["items"], f"the world has something in {url} to check"
    assert client.get("/api/alerts").json()["items"][0]["deliveries"]
    assert client.get("/api/flow").json()["edges"]

    def send(method, url, body):
        import json

        return getattr(client, method)(url, json.dumps(body), content_type="application/json")

    rule = {"name": "Lagging", "kind": "lag", "params": {"threshold": 100}, "enabled": True}
    created = send("post", "/api/alert-rules", rule)
    assert_documented(document, "/api/alert-rules", "post", created)
    rule_url = f"/api/alert-rules/{created.json()['id']}"
    assert_documented(
        document, "/api/alert-rules/{id}", "put", send("put", rule_url, {"for_seconds": 30})
    )
    assert_documented(document, "/api/alert-rules/{id}", "delete", client.delete(rule_url))
    hook = {"name": "chat", "url": "https://example.com/chat", "format": "slack"}
    created = send("post", "/api/webhooks", hook)
    assert_documented(document, "/api/webhooks", "post", created)
    hook_url = f"/api/webhooks/{created.json()['id']}"
    assert_documented(
        document, "/api/webhooks/{id}", "put", send("put", hook_url, {"name": "chat2"})
    )
    assert_documented(document, "/api/webhooks/{id}", "delete", client.delete(hook_url))
    client.logout()
    assert_documented(document, "/api/flow", "get", client.get("/api/flow"))  # 401


def test_the_walk_catches_drift():
    document = {
        "components": {
            "schemas": {
                "T": {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
            }
        }
    }
    ref = {"$ref": "#/components/schemas/T"}
    assert schema_errors({"a": 1}, ref, document) == []
    assert schema_errors({"a": 1, "b": 2}, ref, document) == ["$.b: not declared"]
    assert schema_errors({}, ref, document) == ["$.a: required but missing"]
    assert schema_errors({"a": True}, ref, document) == ["$.a: True is not integer"]
