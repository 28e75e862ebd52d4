"""The one outbound HTTP client: every webhook request goes through `post`.

It bounds time (connect/read timeouts and an overall deadline) and size (a
response is read up to RESPONSE_LIMIT bytes), and it refuses destinations
on loopback, private, link-local, multicast, reserved or unspecified
addresses unless EVENTSCOPE_WEBHOOK_ALLOW_PRIVATE is on. The host name is
resolved here, every address it resolves to is checked, and the request is
sent to the checked address (with the original Host header and TLS server
name), so a name that resolves differently the second time (DNS rebinding)
cannot slip past the check.
"""

import base64
import ipaddress
import socket
import time
import urllib.parse
from dataclasses import dataclass, field

import httpx
from django.conf import settings

RESPONSE_LIMIT = 64 * 1024
USER_AGENT = "Eventscope-Webhooks/1.0"


class Refused(Exception):
    """The destination is not allowed or not a usable URL; retrying cannot help."""


@dataclass
class Response:
    status_code: int
    headers: dict[str, str]
    body: bytes  # at most RESPONSE_LIMIT bytes
    elapsed_ms: float
    truncated: bool = False
    address: str = field(default="")


def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (the outside world; tests may patch this)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def forbidden_reason(address: str) -> str | None:
    """Why `address` may not be a webhook destination, or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    # ::ffff:127.0.0.1 reaches 127.0.0.1; judge the IPv4 address it carries.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for test, what in (
        ("is_loopback", "loopback"),
        ("is_unspecified", "unspecified"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, test):
            return what
    if not ip.is_global:
        return "not a public"
    return None


def split_url(url: str) -> tuple[urllib.parse.SplitResult, str, int]:
    """(parts, host, port) of an http(s) URL, or Refused."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"invalid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise Refused("the URL must start with http:// or https://")
    host = parts.hostname
    if not host:
        raise Refused("the URL has no host")
    return parts, host, port or (443 if parts.scheme == "https" else 80)


def check_url(url: str, allow_private: bool | None = None, lookup: bool = True) -> list[str]:
    """The checked addresses to connect to for `url`; raises Refused.

    With lookup=False only literal addresses and "localhost" are judged (for
    form validation, where a DNS failure must not block saving).
    """
    if allow_private is None:
        allow_private = settings.WEBHOOK_ALLOW_PRIVATE
    _parts, host, port = split_url(url)
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False
    if not lookup and not literal:
        if host.rstrip(".").lower().endswith("localhost") and not allow_private:
            raise Refused(f"{host} is a loopback address; webhooks to it are not allowed")
        return []
    try:
        addresses = [host] if literal else resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise ConnectionError(f"cannot resolve {host}: {exc}") from None
    if not addresses:
        raise ConnectionError(f"{host} resolves to no address")
    if not allow_private:
        for address in addresses:
            reason = forbidden_reason(address)
            if reason is not None:
                raise Refused(
                    f"{host} resolves to {address}, a {reason} address; webhooks to it are not"
                    " allowed (EVENTSCOPE_WEBHOOK_ALLOW_PRIVATE=1 allows them)"
                )
    return addresses


def post(url: str, body: bytes, headers: dict[str, str], timeout: float | None = None) -> Response:
    """POST `body` to `url` through the guard.

    Raises Refused (not allowed), httpx.TimeoutException or ConnectionError /
    httpx.TransportError (network trouble, worth retrying).
    """
    timeout = float(timeout or settings.WEBHOOK_TIMEOUT_SECONDS)
    parts, host, port = split_url(url)
    addresses = check_url(url)
    address = addresses[0]
    netloc_host = f"[{address}]" if ":" in address else address
    target = parts._replace(netloc=f"{netloc_host}:{port}").geturl()
    default_port = port == (443 if parts.scheme == "https" else 80)
    host_header = f"[{host}]" if ":" in host else host
    if not default_port:
        host_header += f":{port}"
    request_headers = {"User-Agent": USER_AGENT, **headers, "Host": host_header}
    if parts.username:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request_headers.setdefault("Authorization", f"Basic {token}")
    # The connection goes to the checked address; TLS still verifies the
    # certificate against the host name.
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    started = time.monotonic()
    deadline = started + 2 * timeout
    # trust_env=False: a proxy from the environment would connect on our behalf
    # to whatever the name resolves to there, bypassing the check.
    with httpx.Client(timeout=httpx.Timeout(timeout), trust_env=False) as client:
        request = client.build_request(
            "POST", target, content=body, headers=request_headers, extensions=extensions
        )
        response = client.send(request, stream=True, follow_redirects=False)
        try:
            chunks, size, truncated = [], 0, False
            for chunk in response.iter_raw():
                chunks.append(chunk)
                size += len(chunk)
                if size >= RESPONSE_LIMIT:
                    truncated = True
                    break
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the response took too long to arrive")
        finally:
            response.close()
    return Response(
        status_code=response.status_code,
        headers={k.lower(): v for k, v in response.headers.items()},
        body=b"".join(chunks)[:RESPONSE_LIMIT],
        elapsed_ms=(time.monotonic() - started) * 1000,
        truncated=truncated,
        address=address,
    )
