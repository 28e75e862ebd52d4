"""The outbound client's private-address guard, limits and Host handling."""

import time

import httpx
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
        "http://[fc00::1]/hook",
        "http://[fec0::1]/hook",
    ],
)
def test_it_refuses_private_destinations(settings, url):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(outbound.Refused, match="not allowed"):
        outbound.post(url, b"{}", {})


@pytest.mark.parametrize(
    "address, reached, reason",
    [
        ("2002:7f00:0001::1", "6to4 form of 127.0.0.1", "loopback"),
        ("2002:a9fe:a9fe::1", "6to4 form of 169.254.169.254", "link-local"),
        ("2002:0a00:0001::1", "6to4 form of 10.0.0.1", "private"),
        ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254", "link-local"),
    ],
)
def test_ipv6_forms_of_a_forbidden_ipv4_address_are_refused(settings, address, reached, reason):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(outbound.Refused, match=f"{reached}, a {reason} address"):
        outbound.post(f"http://[{address}]/hook", b"{}", {})


def test_ipv6_forms_of_a_public_ipv4_address_pass():
    assert outbound.forbidden_reason("2002:5db8:d70e::1") is None  # 6to4 of 93.184.215.14
    assert outbound.forbidden_reason("64:ff9b::5db8:d70e") is None  # NAT64 of the same
    assert outbound.forbidden_reason("fec0::1") == "a site-local address"


def test_a_public_looking_name_that_resolves_to_a_private_address_is_refused(settings, dns):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    dns["hooks.example.com"] = ["93.184.215.14", "10.1.2.3"]
    with pytest.raises(outbound.Refused, match="10.1.2.3, a private address"):
        outbound.post("https://hooks.example.com/x", b"{}", {})


def test_a_name_that_resolves_to_the_metadata_address_is_refused(settings, dns):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    dns["metadata.example.com"] = ["169.254.169.254"]
    with pytest.raises(outbound.Refused, match="169.254.169.254, a link-local address"):
        outbound.post("http://metadata.example.com/latest/meta-data/", b"{}", {})


def test_public_addresses_pass_the_check(settings, dns):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    dns["hooks.example.com"] = ["93.184.215.14"]
    assert outbound.check_url("https://hooks.example.com/x") == ["93.184.215.14"]
    assert outbound.forbidden_reason("2606:4700::1111") is None


def test_it_connects_to_the_checked_address_and_keeps_the_host(receiver, dns):
    # The name is resolved once, by the guard; the request goes to that address.
    calls = []

    def answer(host):
        calls.append(host)
        return ["127.0.0.1"]

    dns["hooks.example.test"] = answer
    url = f"http://hooks.example.test:{receiver.port}/hook"
    response = outbound.post(url, b'{"a":1}', {"Content-Type": "application/json"})
    assert response.status_code == 200 and response.address == "127.0.0.1"
    assert calls == ["hooks.example.test"]
    (received,) = receiver.requests
    assert received.headers["host"] == f"hooks.example.test:{receiver.port}"
    assert received.body == b'{"a":1}'


def test_when_the_first_address_refuses_the_next_one_is_tried(receiver, dns):
    # Nothing listens on 127.0.0.2 (the receiver is bound to 127.0.0.1 only).
    dns["hooks.example.test"] = ["127.0.0.2", "127.0.0.1"]
    response = outbound.post(f"http://hooks.example.test:{receiver.port}/hook", b"{}", {})
    assert response.status_code == 200 and response.address == "127.0.0.1"
    assert len(receiver.requests) == 1


def test_when_no_address_answers_each_one_is_named(receiver, dns):
    dns["hooks.example.test"] = ["127.0.0.2", "127.0.0.3"]
    with pytest.raises(httpx.ConnectError, match="127.0.0.2: .*; 127.0.0.3: "):
        outbound.post(f"http://hooks.example.test:{receiver.port}/hook", b"{}", {})


def test_an_international_host_name_is_sent_in_its_idna_form(receiver, dns):
    dns["xn--bcher-kva.example"] = ["127.0.0.1"]
    response = outbound.post(f"http://bücher.example:{receiver.port}/hook", b"{}", {})
    assert response.status_code == 200
    assert receiver.requests[0].headers["host"] == f"xn--bcher-kva.example:{receiver.port}"


@pytest.mark.parametrize("url", ["http://a..b/hook", f"http://{'x' * 64}.example/", "http://a b/"])
def test_a_host_that_is_not_a_valid_name_is_refused(url):
    with pytest.raises(outbound.Refused, match="not a valid host name"):
        outbound.post(url, b"{}", {})


def test_a_receiver_dribbling_its_headers_is_cut_off_at_the_limit(receiver):
    receiver.script(Reply(200, dribble=8))
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException, match="no complete answer within 1 s"):
        outbound.post(receiver.url, b"{}", {}, timeout=1)
    assert time.monotonic() - started < 1.5
    assert len(receiver.requests) == 1  # it was sent, and the answer never completed


def test_a_name_lookup_that_hangs_is_bounded_by_the_same_limit(receiver, dns):
    dns["slow.example.test"] = lambda host: time.sleep(3) or ["127.0.0.1"]
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="cannot resolve slow.example.test: no answer"):
        outbound.post(f"http://slow.example.test:{receiver.port}/", b"{}", {}, timeout=1)
    assert time.monotonic() - started < 1.5
    assert receiver.requests == []


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
