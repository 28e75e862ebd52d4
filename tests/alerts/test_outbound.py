"""The outbound client's private-address guard, limits and Host handling."""

import pytest

from dashboard.alerts import outbound
from tests.alerts.conftest import Reply


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.0.0.1/hook",
        "http://192.168.1.20:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",
        "http://localhost:8000/hook",
    ],
)
def test_it_refuses_private_destinations(settings, url):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(outbound.Refused, match="not allowed"):
        outbound.post(url, b"{}", {})


def test_a_public_looking_name_that_resolves_to_a_private_address_is_refused(settings, monkeypatch):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    monkeypatch.setattr(outbound, "resolve", lambda host, port: ["93.184.215.14", "10.1.2.3"])
    with pytest.raises(outbound.Refused, match="10.1.2.3, a private address"):
        outbound.post("https://hooks.example.com/x", b"{}", {})


def test_public_addresses_pass_the_check(settings, monkeypatch):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    monkeypatch.setattr(outbound, "resolve", lambda host, port: ["93.184.215.14"])
    assert outbound.check_url("https://hooks.example.com/x") == ["93.184.215.14"]
    assert outbound.forbidden_reason("2606:4700::1111") is None


def test_it_connects_to_the_checked_address_and_keeps_the_host(receiver, monkeypatch):
    # The name is resolved once, by the guard; the request goes to that address.
    calls = []

    def resolve(host, port):
        calls.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(outbound, "resolve", resolve)
    url = f"http://hooks.example.test:{receiver.port}/hook"
    response = outbound.post(url, b'{"a":1}', {"Content-Type": "application/json"})
    assert response.status_code == 200 and response.address == "127.0.0.1"
    assert calls == ["hooks.example.test"]
    (received,) = receiver.requests
    assert received.headers["host"] == f"hooks.example.test:{receiver.port}"
    assert received.body == b'{"a":1}'


def test_allowed_with_the_setting_on(receiver):
    response = outbound.post(receiver.url, b"{}", {})
    assert response.status_code == 200


def test_responses_are_read_only_up_to_the_limit(receiver):
    receiver.script(Reply(200, body=b"x" * (1024 * 1024)))
    response = outbound.post(receiver.url, b"{}", {})
    assert response.truncated and len(response.body) == outbound.RESPONSE_LIMIT


def test_only_http_urls(settings):
    with pytest.raises(outbound.Refused, match="http:// or https://"):
        outbound.post("file:///etc/passwd", b"", {})
    with pytest.raises(outbound.Refused, match="no host"):
        outbound.post("http:///x", b"", {})


def test_redirects_are_not_followed(receiver):
    receiver.script(Reply(302, headers={"Location": "http://169.254.169.254/"}))
    response = outbound.post(receiver.url, b"{}", {})
    assert response.status_code == 302 and len(receiver.requests) == 1
