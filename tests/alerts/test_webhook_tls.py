"""Webhooks to HTTPS receivers: certificates are verified, and a receiver
behind a private CA is trusted through the webhook's own CA bundle."""

import json
import ssl

import pytest
import trustme

from dashboard.alerts.models import Webhook
from tests.alerts.conftest import Receiver


@pytest.fixture
def private_ca():
    return trustme.CA()


@pytest.fixture
def https_receiver(settings, private_ca):
    """The test receiver behind TLS, with a certificate from a CA nobody trusts by default."""
    settings.WEBHOOK_ALLOW_PRIVATE = True
    server = Receiver()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    private_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    server.url = f"https://127.0.0.1:{server.port}/hook"
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def send(client, method, url, data=None):
    return getattr(client, method)(url, json.dumps(data), content_type="application/json")


@pytest.fixture
def as_editor(client, editor):
    client.force_login(editor)
    return client


def test_an_untrusted_certificate_fails_with_a_clear_error_and_its_ca_bundle_fixes_it(
    as_editor, https_receiver, private_ca
):
    hook = send(as_editor, "post", "/api/webhooks", {"name": "ops", "url": https_receiver.url})
    assert hook.status_code == 201 and hook.json()["ca_bundle"] == ""
    hook_id = hook.json()["id"]

    failed = as_editor.post(f"/api/webhooks/{hook_id}/test").json()
    assert failed["status"] == "failed"  # a test send is tried once
    error = failed["attempts"][0]["error"]
    assert "TLS certificate of 127.0.0.1 is not trusted" in error
    assert "CA bundle" in error
    assert https_receiver.requests == []
    # The delivery log on the webhook's page says the same.
    page = as_editor.get(f"/webhooks/{hook_id}/").content.decode()
    assert "is not trusted" in page

    bundle = private_ca.cert_pem.bytes().decode()
    updated = send(as_editor, "put", f"/api/webhooks/{hook_id}", {"ca_bundle": bundle})
    assert updated.status_code == 200
    assert updated.json()["ca_bundle"].strip() == bundle.strip()
    delivered = as_editor.post(f"/api/webhooks/{hook_id}/test").json()
    assert delivered["status"] == "delivered", delivered
    (request,) = https_receiver.requests
    assert request.path == "/hook" and request.headers["webhook-id"]


def test_a_ca_bundle_trusts_only_its_own_ca(as_editor, https_receiver):
    other_ca = trustme.CA().cert_pem.bytes().decode()
    hook = send(
        as_editor,
        "post",
        "/api/webhooks",
        {"name": "ops", "url": https_receiver.url, "ca_bundle": other_ca},
    ).json()
    failed = as_editor.post(f"/api/webhooks/{hook['id']}/test").json()
    assert "is not trusted" in failed["attempts"][0]["error"]
    assert https_receiver.requests == []


@pytest.mark.parametrize(
    "bundle, message",
    [
        ("not a certificate", "must hold PEM certificates"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "not valid PEM certificates",
        ),
        (42, "must be a string"),
    ],
)
def test_a_bad_ca_bundle_is_a_400_that_says_so(as_editor, bundle, message):
    answer = send(
        as_editor,
        "post",
        "/api/webhooks",
        {"name": "ops", "url": "https://hooks.example.com/x", "ca_bundle": bundle},
    )
    assert answer.status_code == 400
    assert message in answer.json()["error"]
    assert not Webhook.objects.exists()


def test_the_form_saves_a_ca_bundle(client, editor, project, private_ca):
    client.force_login(editor)
    bundle = private_ca.cert_pem.bytes().decode()
    created = client.post(
        "/webhooks/",
        {
            "name": "ops",
            "url": "https://hooks.example.com/x",
            "format": "json",
            "ca_bundle": bundle,
        },
    )
    assert created.status_code == 302
    hook = Webhook.objects.get()
    assert hook.ca_bundle.strip() == bundle.strip()
    assert "BEGIN CERTIFICATE" in client.get(f"/webhooks/{hook.pk}/").content.decode()
    refused = client.post(
        f"/webhooks/{hook.pk}/",
        {"name": "ops", "url": hook.url, "format": "json", "ca_bundle": "nonsense"},
    )
    assert refused.status_code == 400
    hook.refresh_from_db()
    assert hook.ca_bundle.strip() == bundle.strip()
