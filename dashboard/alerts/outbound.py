"""The one outbound HTTP client: every webhook request goes through `post`.

It bounds time and size. One wall-clock limit (EVENTSCOPE_WEBHOOK_TIMEOUT_SECONDS)
covers the whole request: the name lookup, connecting, TLS, sending, and the
status line, headers and body of the answer, so a receiver that dribbles a
header line every half second cannot hold a sender. A response is read up
to RESPONSE_LIMIT bytes.

HTTPS receivers' certificates are always verified, against the public
roots (certifi) or, for a receiver behind a private CA, against the
webhook's own CA bundle alone; there is no switch that turns verification
off. A certificate that does not verify is a connection error that says so.

It refuses destinations on loopback, private, site-local, link-local,
multicast, reserved or unspecified addresses, and IPv6 forms that carry
such an IPv4 address (IPv4-mapped, 6to4, NAT64), unless
EVENTSCOPE_WEBHOOK_ALLOW_PRIVATE is on. The host name is resolved here,
every address it resolves to is checked, and the request is sent to a
checked address (with the original Host header and TLS server name), so a
name that resolves differently the second time (DNS rebinding) cannot slip
past the check.
"""

import asyncio
import base64
import concurrent.futures
import ipaddress
import re
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field

import httpx
from django.conf import settings

RESPONSE_LIMIT = 64 * 1024
USER_AGENT = "Eventscope-Webhooks/1.0"
# The well-known NAT64 prefix (RFC 6052): the last 32 bits are the IPv4 address reached.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?")

# getaddrinfo cannot be interrupted, so lookups run here and the caller stops
# waiting at its limit. A lookup that hangs keeps its thread until the system
# resolver gives up; with a fixed pool, a resolver outage holds four threads
# and later lookups wait in line (and time out) instead of piling up threads.
_lookups = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


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


def resolve(host: str, port: int, timeout: float) -> list[str]:
    """The addresses `host` resolves to; ConnectionError if there is no answer
    within `timeout` seconds."""
    lookup = _lookups.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        lookup.cancel()
        raise ConnectionError(f"cannot resolve {host}: no answer within {timeout:g} s") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def _embedded_ipv4(ip: ipaddress.IPv6Address):
    """(IPv4 address, name of the form) for IPv6 addresses that lead to an IPv4
    host, else None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    return None


def forbidden_reason(address: str) -> str | None:
    """Why `address` may not be a webhook destination ("a private address"...),
    or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # These reach the IPv4 address they carry: judge that one.
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner, form = embedded
            reason = forbidden_reason(str(inner))
            return None if reason is None else f"the {form} form of {inner}, {reason}"
    for test, what in (
        ("is_loopback", "loopback"),
        ("is_unspecified", "unspecified"),
        ("is_link_local", "link-local"),
        ("is_site_local", "site-local"),  # fec0::/10: deprecated, still routed inside sites
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, test, False):
            return f"a {what} address"
    if not ip.is_global:
        return "not a public address"
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def ascii_host(host: str) -> str:
    """The host as it goes on the wire: an IP literal, or a name in IDNA form
    (bücher.example → xn--bcher-kva.example); Refused when it is neither."""
    if _is_ip(host):
        return host
    try:
        name = host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise Refused(f"{host} is not a valid host name: {exc}") from None
    labels = name.removesuffix(".").split(".")
    if len(name) > 253 or not all(HOST_LABEL.fullmatch(label) for label in labels):
        raise Refused(f"{host} is not a valid host name")
    return name


def split_url(url: str) -> tuple[urllib.parse.SplitResult, str, int]:
    """(parts, host in ASCII, port) of an http(s) URL, or Refused."""
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
    return parts, ascii_host(host), port or (443 if parts.scheme == "https" else 80)


def _refusal(host: str, address: str, reason: str) -> Refused:
    where = f"{address} is" if host == address else f"{host} resolves to {address},"
    return Refused(
        f"{where} {reason}; webhooks to it are not allowed"
        " (EVENTSCOPE_WEBHOOK_ALLOW_PRIVATE=1 allows them)"
    )


def check_url(
    url: str,
    allow_private: bool | None = None,
    lookup: bool = True,
    timeout: float | None = None,
) -> list[str]:
    """The checked addresses to connect to for `url`; raises Refused, or
    ConnectionError when the name cannot be resolved within `timeout`.

    With lookup=False only the URL's form, literal addresses and "localhost"
    are judged (for form validation, where a DNS failure must not block saving).
    """
    if allow_private is None:
        allow_private = settings.WEBHOOK_ALLOW_PRIVATE
    _parts, host, port = split_url(url)
    literal = _is_ip(host)
    if not lookup and not literal:
        if host.rstrip(".").endswith("localhost") and not allow_private:
            raise _refusal(host, "localhost", "a loopback address")
        return []
    try:
        addresses = [host] if literal else resolve(host, port, timeout or _limit())
    except ConnectionError:
        raise
    except OSError as exc:  # socket.gaierror: no such name, no DNS server...
        raise ConnectionError(f"cannot resolve {host}: {exc}") from None
    if not addresses:
        raise ConnectionError(f"{host} resolves to no address")
    if not allow_private:
        for address in addresses:
            reason = forbidden_reason(address)
            if reason is not None:
                raise _refusal(host, address, reason)
    return addresses


def _limit() -> float:
    return float(settings.WEBHOOK_TIMEOUT_SECONDS)


def tls_context(ca_bundle: str = "") -> ssl.SSLContext | bool:
    """What verifies an HTTPS receiver: the public roots (True), or only the CA
    certificates of `ca_bundle` (PEM); ssl.SSLError when it holds none."""
    if not ca_bundle.strip():
        return True
    context = ssl.create_default_context(cadata=ca_bundle)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _untrusted(exc: Exception) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind a connection error, if that is what it is."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float | None = None,
    ca_bundle: str = "",
) -> Response:
    """POST `body` to `url` through the guard, within `timeout` seconds in all
    (default EVENTSCOPE_WEBHOOK_TIMEOUT_SECONDS); an https receiver's certificate
    is verified against `ca_bundle` (PEM) when given, else the public roots.

    Raises Refused (not allowed), httpx.TimeoutException (the limit passed) or
    ConnectionError / httpx.TransportError (network trouble, worth retrying).
    """
    limit = float(timeout or _limit())
    started = time.monotonic()
    parts, host, port = split_url(url)
    addresses = check_url(url, timeout=limit)
    host_header = f"[{host}]" if ":" in host else host
    if port != (443 if parts.scheme == "https" else 80):
        host_header += f":{port}"
    request_headers = {"User-Agent": USER_AGENT, **headers, "Host": host_header}
    if parts.username:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request_headers.setdefault("Authorization", f"Basic {token}")
    late = httpx.TimeoutException(f"no complete answer within {limit:g} s")
    left = started + limit - time.monotonic()
    if left <= 0:  # the name lookup used it all
        raise late
    try:
        # Cancellation is what makes the limit hard: httpx's own timeouts
        # apply to each read, and a slow trickle of bytes never trips them.
        # Cancelling the coroutine closes the connection.
        return asyncio.run(
            asyncio.wait_for(
                _exchange(
                    parts,
                    port,
                    addresses,
                    host,
                    request_headers,
                    body,
                    started,
                    limit,
                    tls_context(ca_bundle),
                ),
                left,
            )
        )
    except TimeoutError:
        raise late from None


async def _exchange(
    parts, port, addresses, host, headers, body, started, limit, verify=True
) -> Response:
    """Send the request to the first checked address that accepts a connection."""
    deadline = started + limit
    # TLS still verifies the certificate against the host name.
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    failures = []
    # trust_env=False: a proxy from the environment would connect on our behalf
    # to whatever the name resolves to there, bypassing the check.
    async with httpx.AsyncClient(trust_env=False, verify=verify) as client:
        for n, address in enumerate(addresses):
            # Each address left gets an equal share of the time left to
            # connect, so one that never answers does not use up the rest.
            share = max(deadline - time.monotonic(), 0.001) / (len(addresses) - n)
            netloc = f"[{address}]" if ":" in address else address
            request = client.build_request(
                "POST",
                parts._replace(netloc=f"{netloc}:{port}").geturl(),
                content=body,
                headers=headers,
                extensions=extensions,
                timeout=httpx.Timeout(max(deadline - time.monotonic(), 0.001), connect=share),
            )
            try:
                response = await client.send(request, stream=True, follow_redirects=False)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing was sent yet, so the next address may be tried.
                untrusted = _untrusted(exc)
                if untrusted is not None:
                    exc = httpx.ConnectError(
                        f"the TLS certificate of {host} is not trusted "
                        f"({untrusted.verify_message or untrusted.reason}); for a receiver "
                        "behind a private CA, put that CA's certificate in the webhook's CA bundle"
                    )
                failures.append((address, exc))
                continue
            try:
                chunks, size, truncated = [], 0, False
                async for chunk in response.aiter_raw():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size >= RESPONSE_LIMIT:
                        truncated = True
                        break
            finally:
                await response.aclose()
            return Response(
                status_code=response.status_code,
                headers={k.lower(): v for k, v in response.headers.items()},
                body=b"".join(chunks)[:RESPONSE_LIMIT],
                elapsed_ms=(time.monotonic() - started) * 1000,
                truncated=truncated,
                address=address,
            )
    if len(failures) == 1:
        raise failures[0][1]
    raise httpx.ConnectError(
        "no address accepted the connection: "
        + "; ".join(f"{address}: {exc or type(exc).__name__}" for address, exc in failures)
    )
