"""Ingest authentication: `Authorization: Bearer <token>` -> the project the data belongs to.

With EVENTSCOPE_INGEST_AUTH=off a valid ingest token still decides the
project, and a missing or unusable one sends the data to the default
project instead of a 401 (the contract's "unless ... off").

Behind mutual TLS a client certificate can stand for a token: a request
without an Authorization header whose verified certificate has a subject CN
or subject alternative name listed in EVENTSCOPE_TLS_CLIENT_PROJECTS goes to
that name's project. A request that sends a token is judged by the token
alone, so the certificate is then only required in addition (with
EVENTSCOPE_TLS_CLIENT_AUTH=required).

Lookups are cached in the process for CACHE_SECONDS, because every export
request carries the token and the database is busy with the writes. The
price: revoking a token takes effect within CACHE_SECONDS. While the
database is unreachable, the last answer for a token stays in use. Unknown
tokens are cached as unknown too (a token's secret is random, so an unknown
secret never becomes valid later), which keeps a misconfigured exporter
from costing a query per request.
"""

import logging
import threading
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from collector.batch import StorageUnavailable

log = logging.getLogger(__name__)

CACHE_SECONDS = 30.0
MAX_CACHED = 10_000
_DEFAULT = "\x00default"  # the cache key of the default project

_cache: dict[str, tuple[int | None, float]] = {}
_warned: set[str] = set()  # token prefixes already logged as sent to the default project
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
        raise StorageUnavailable(f"cannot check the token: {exc}", retry_after=1) from exc
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
        _warned.clear()


async def _project_of(token: str | None) -> int | None:
    """The project of an ingest token (the default project for None); None if unusable."""
    key = token if token is not None else _DEFAULT
    hit, project_id = _cached(key)
    if not hit:
        try:
            project_id = await sync_to_async(_lookup)(token)
        except StorageUnavailable:
            # While the database is away, what it said last still holds: the
            # writer keeps batches through a short outage, and an exporter
            # refused for its token alone would lose them.
            with _lock:
                stale = _cache.get(key)
            if stale is None:
                raise
            return stale[0]
        _remember(key, project_id)
    return project_id


def _warn_once(prefix: str, problem: str) -> None:
    # Once per prefix: a misconfigured exporter sends every few seconds, and
    # a line per request would bury the log.
    with _lock:
        if prefix in _warned:
            return
        if len(_warned) >= MAX_CACHED:
            _warned.clear()
        _warned.add(prefix)
    log.warning(
        "%s; ingest auth is off, so its data goes to the default project %r",
        problem,
        settings.DEFAULT_PROJECT,
    )


def _lookup_slug(slug: str) -> int | None:
    from collector.models import Project

    try:
        return Project.objects.filter(slug=slug).values_list("pk", flat=True).first()
    except DatabaseError as exc:
        raise StorageUnavailable(f"cannot look up project {slug!r}: {exc}") from exc
    finally:
        connection.close()


async def _certificate_project(names: tuple[str, ...]) -> int | None:
    """The project a client certificate's names map to (EVENTSCOPE_TLS_CLIENT_PROJECTS);
    None when none of them is mapped. Unauthorized when the project does not exist."""
    mapping = settings.TLS_CLIENT_PROJECTS
    for name in names:
        slug = mapping.get(name)
        if slug is None:
            continue
        key = "\x00project:" + slug
        hit, project_id = _cached(key)
        if not hit:
            project_id = await sync_to_async(_lookup_slug)(slug)
            _remember(key, project_id)
        if project_id is None:
            raise Unauthorized(
                f"client certificate {name!r} is mapped to project {slug!r}, which does not exist"
            )
        return project_id
    return None


async def project_for(authorization: str | None, certificate: tuple[str, ...] = ()) -> int:
    """The project id for a request's Authorization header and the names of its
    verified client certificate (collector.tls.names_of; empty without one).

    A valid ingest token gives its project; without a token, a certificate
    name mapped to a project gives that one. Otherwise, with ingest auth
    required, Unauthorized; with it off, the default project (a given but
    unusable token is logged once per prefix). Raises StorageUnavailable
    when the database cannot be asked.
    """
    auth_off = settings.INGEST_AUTH == "off"
    try:
        token = bearer_token(authorization)
    except Unauthorized:
        if not auth_off:
            raise
        scheme = (authorization or "").strip().partition(" ")[0][:16]
        _warn_once(f"scheme:{scheme}", f"an Authorization header of scheme {scheme!r} is unusable")
        token = None
    if token is None:
        if authorization is None or not authorization.strip():
            mapped = await _certificate_project(certificate)
            if mapped is not None:
                return mapped
        if not auth_off:
            message = "missing ingest token: send 'Authorization: Bearer <ingest token>'"
            if certificate:
                message += f" (client certificate {certificate[0]!r} is not mapped to a project)"
            raise Unauthorized(message)
        return await _project_of(None)
    project_id = await _project_of(token)
    if project_id is not None:
        return project_id
    if not auth_off:
        raise Unauthorized("invalid, revoked or non-ingest token")
    # At most the ten characters the token list shows, and never half a short one.
    prefix = token[: min(10, len(token) // 2)]
    _warn_once(prefix, f"ingest token {prefix}… is invalid, revoked or not ingest-scoped")
    return await _project_of(None)
