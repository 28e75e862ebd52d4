"""/api/openapi.json describes every endpoint of the JSON API contract."""

import re

from django.urls import Resolver404, resolve

CONTRACT = {
    "/api/flow": {"get"},
    "/api/traces/{trace_id}": {"get"},
    "/api/events/{event_id}": {"get"},
    "/api/failures": {"get"},
    "/api/lag": {"get"},
    "/api/alert-rules": {"get", "post"},
    "/api/alert-rules/{id}": {"get", "put", "delete"},
    "/api/webhooks": {"get", "post"},
    "/api/webhooks/{id}": {"get", "put", "delete"},
    "/api/webhooks/{id}/test": {"post"},
    "/api/alerts": {"get"},
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
