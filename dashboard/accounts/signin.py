"""Sign-in protection: whose address a request comes from, and the answer to
a locked-out sign-in.

Failed sign-ins are counted by django-axes (settings: AXES_*), per username
and per client address. Both axes and the audit log take the client's
address from `client_ip`, so a lockout and the audit rows that explain it
name the same address.
"""

import ipaddress

from django.conf import settings
from django.shortcuts import render


def _valid(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        return None


def client_ip(request) -> str | None:
    """The client's address, or None when it cannot be told.

    With EVENTSCOPE_PROXY_COUNT=0 it is the connection's address (uvicorn
    already puts the client's address there for proxies it trusts, see
    FORWARDED_ALLOW_IPS). With N proxies in front, each appending the address
    it received from to X-Forwarded-For, the client is the Nth entry from the
    right: entries further left were written by the client and prove nothing.
    """
    count = settings.PROXY_COUNT
    if count:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= count:
            return _valid(hops[-count])
        # Fewer hops than proxies: the request did not come through them all.
    return _valid(request.META.get("REMOTE_ADDR") or "")


def locked_out(request, original_response=None, credentials=None):
    """axes' answer while a username or address is locked out: 429, the sign-in
    page's look, how long to wait, and Retry-After for programs."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    response = render(
        request,
        "registration/locked_out.html",
        {"cooloff_minutes": minutes, "failure_limit": settings.AXES_FAILURE_LIMIT},
        status=settings.AXES_HTTP_RESPONSE_CODE,
    )
    response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    return response
