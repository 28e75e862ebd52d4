"""Ingest authentication: `Authorization: Bearer <token>` -> the project the data belongs to.

Lookups are cached in the process for CACHE_SECONDS, because every export
request carries the token and the database is busy with the writes. The
price: revoking a token takes effect within CACHE_SECONDS. Unknown tokens
are cached as unknown too (a token's secret is random, so an unknown
secret never becomes valid later), which keeps a misconfigured exporter
from costing a query per request.
"""

import threading
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from collector.batch import StorageUnavailable

CACHE_SECONDS = 30.0
MAX_CACHED = 10_000

_cache: dict[str, tuple[int | None, float]] = {}
_lock = threading.Lock()


class Unauthorized(Exception):
    """No usable credentials (HTTP 401, gRPC UNAUTHENTICATED)."""

    status = 401


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` value; None when absent.

    Raises Unauthorized for another scheme, so a misconfigured header is not
    silently treated as "no token".
    """
    if authorization is None or not authorization.strip():
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <ingest token>'")
    return token.strip()


def _lookup(token: str | None) -> int | None:
    from collector.models import ApiToken, Project, Scope

    try:
        if token is None:
            return Project.default().pk
        found = ApiToken.objects.authenticate(token, Scope.INGEST)
        if found is None:
            return None
        ApiToken.objects.filter(pk=found.pk).update(last_used_at=timezone.now())
        return found.project_id
    except DatabaseError as exc:
        raise StorageUnavailable(f"cannot check the token: {exc}") from exc
    finally:
        # Lookups are rare (cached), and a connection kept by this worker
        # thread would outlive the server that started it.
        connection.close()


def _cached(key: str) -> tuple[bool, int | None]:
    with _lock:
        entry = _cache.get(key)
    if entry is not None and entry[1] > time.monotonic():
        return True, entry[0]
    return False, None


def _remember(key: str, project_id: int | None) -> None:
    with _lock:
        if len(_cache) >= MAX_CACHED:
            _cache.clear()
        _cache[key] = (project_id, time.monotonic() + CACHE_SECONDS)


def forget() -> None:
    """Drop every cached lookup (tests; token admin in the same process)."""
    with _lock:
        _cache.clear()


async def project_for(authorization: str | None) -> int:
    """The project id for a request's Authorization header.

    Missing token: the default project when ingest auth is off, else
    Unauthorized. A token that is given but unknown, revoked or not
    ingest-scoped is always Unauthorized. Raises StorageUnavailable when the
    database cannot be asked.
    """
    token = bearer_token(authorization)
    if token is None and settings.INGEST_AUTH != "off":
        raise Unauthorized("missing ingest token: send 'Authorization: Bearer <ingest token>'")
    key = token if token is not None else "\x00default"
    hit, project_id = _cached(key)
    if not hit:
        project_id = await sync_to_async(_lookup)(token)
        _remember(key, project_id)
    if project_id is None:
        raise Unauthorized("invalid, revoked or non-ingest token")
    return project_id
