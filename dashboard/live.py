"""Live pages: PostgreSQL NOTIFY hints → Channels groups → coalesced pushes.

The writer sends a tiny hint after each commit (collector.notify): "project P
changed in area A". Each web process holds ONE listening connection on
`collector.notify.CHANNEL`, opened lazily when the first websocket connects
and reopened with backoff if the database goes away. Every hint is forwarded
to the Channels group ``live.<project>.<area>``.

A live page subclasses `LiveConsumer`, names the areas it shows and
implements `push()`, which re-reads PostgreSQL and sends whatever the page
needs: the page's live partial rendered with ``hx-swap-oob`` for htmx's
websocket extension (failures, lag, alerts), or JSON through `send_json`
(the flow graph). Hints carry no data: PostgreSQL stays the single source of
truth, a burst of hints costs at most one push per second per connection,
and a reconnecting page simply gets a fresh `push()`. Before every push the
consumer checks that the session is still signed in and the user still a
member of the project; a page whose user signed out or was removed is
closed (4401 / 4403) instead of receiving more data.

Example (dashboard/alerts/views.py)::

    class AlertsConsumer(LiveConsumer):
        areas = ("alerts",)

        async def push(self):
            html = await database_sync_to_async(self._render)()
            await self.send(text_data=html)

        def _render(self) -> str:
            context = live_context(self.project, self.params)
            context["oob"] = True
            return render_to_string("alerts/page.html#live", context)

and in dashboard/routing.py: ``path("ws/alerts/", AlertsConsumer.as_asgi())``.
"""

import asyncio
import collections
import json
import logging
from importlib import import_module
from urllib.parse import parse_qs

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model

from collector import notify
from collector.models import Project
from dashboard.access import SESSION_PROJECT
from dashboard.accounts.models import Membership, Role, projects_of
from dashboard.query_params import BadParameter, clean_text

log = logging.getLogger(__name__)

# Close codes in the private 4000-4999 range, mirroring HTTP 401 / 403.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


def group_name(project_id: int, area: str) -> str:
    """The Channels group that receives hints for one project and area."""
    return f"live.{project_id}.{area}"


class HintListener:
    """The process's single LISTEN connection, forwarding hints to Channels groups.

    Started on first use from a running event loop; if that loop goes away
    (a test's loop ends) the next `ensure_started()` starts a fresh task on
    the current loop. After a reconnect, every group a consumer of this
    process has joined gets a synthetic hint: hints sent while the
    connection was down are lost, and a re-read is how pages catch up.
    """

    backoff_initial = 0.5
    backoff_max = 30.0

    def __init__(self):
        self._task: asyncio.Task | None = None
        self.groups: collections.Counter = collections.Counter()
        self.connected = asyncio.Event()

    def ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            return
        self.connected = asyncio.Event()
        self._task = loop.create_task(self._run(), name="eventscope-live-listener")

    def join(self, group: str) -> None:
        self.groups[group] += 1

    def leave(self, group: str) -> None:
        self.groups[group] -= 1
        if self.groups[group] <= 0:
            del self.groups[group]

    async def stop(self) -> None:
        """Close the listening connection (tests and shutdown)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def _run(self) -> None:
        import psycopg

        from collector.db import conninfo

        delay = self.backoff_initial
        first = True
        while True:
            try:
                info = await database_sync_to_async(conninfo)()
                async with await psycopg.AsyncConnection.connect(info, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {notify.CHANNEL}")
                    self.connected.set()
                    delay = self.backoff_initial
                    if not first:
                        await self._resync()
                    first = False
                    async for message in conn.notifies():
                        await self._forward(message.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                log.warning(
                    "live hints: listening connection lost (%s); retry in %.1fs", exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)

    async def _forward(self, raw: str) -> None:
        try:
            hint = json.loads(raw)
            group = group_name(int(hint["project"]), str(hint["area"]))
        except (ValueError, KeyError, TypeError):
            log.warning("live hints: ignoring malformed payload %r", raw[:200])
            return
        await get_channel_layer().group_send(group, {"type": "live.hint", "hint": hint})

    async def _resync(self) -> None:
        layer = get_channel_layer()
        for group in list(self.groups):
            await layer.group_send(group, {"type": "live.hint", "hint": {"resync": True}})


listener = HintListener()


class LiveConsumer(AsyncWebsocketConsumer):
    """Base of every live page's websocket.

    Subclasses set `areas` (hint areas from collector.notify) and implement
    `push()`. On connect the consumer checks that `scope["user"]` is signed
    in (else closes with 4401) and a member of the project named by
    ``?project=<slug>`` or remembered in the session (else 4403), sets
    `self.project` and `self.params` (the query string, a dict of first
    values), joins ``live.<project>.<area>`` for each area and pushes once,
    so a reconnecting page is current. Hints then trigger `push()` at most
    once per `min_interval` seconds, with a trailing push so the last change
    is never lost. Messages from the page (new filters, a refresh) are
    coalesced the same way: nothing a client sends makes pushes more frequent.
    """

    areas: tuple[str, ...] = ("flow",)
    role: str = Role.VIEWER
    min_interval: float = 1.0

    project: Project | None = None

    async def connect(self):
        self.project = None
        self._groups: list[str] = []
        self._dirty = False
        self._timer: asyncio.Task | None = None
        self._last_push = float("-inf")
        self.params = {k: v[0] for k, v in parse_qs(self.scope["query_string"].decode()).items()}
        # Accept first: a close before accepting turns into an HTTP 403 and
        # the browser never sees why; a close code tells the page what to do.
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        project = await self._project_for(user)
        if project is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.project = project
        for area in self.areas:
            group = group_name(project.pk, area)
            await self.channel_layer.group_add(group, self.channel_name)
            listener.join(group)
            self._groups.append(group)
        listener.ensure_started()
        await self._push_now()

    async def disconnect(self, code):
        for group in getattr(self, "_groups", ()):
            await self.channel_layer.group_discard(group, self.channel_name)
            listener.leave(group)
        self._groups = []
        timer = getattr(self, "_timer", None)
        if timer is not None and not timer.done():
            timer.cancel()

    async def receive(self, text_data=None, bytes_data=None):
        """Pages may send {"params": {...}} to change their filters, or {"refresh": true};
        either asks for a push, which comes no sooner than `min_interval` after the last."""
        if not text_data or self.project is None:
            return
        try:
            message = json.loads(text_data)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        params = message.get("params")
        if isinstance(params, dict):
            self.params = {str(k): str(v) for k, v in params.items() if v not in (None, "")}
        if isinstance(params, dict) or message.get("refresh"):
            self._schedule()

    async def live_hint(self, event):
        self._schedule()

    async def push(self):
        """Re-read PostgreSQL for `self.project` and send the page its new state."""
        raise NotImplementedError

    # ---- sending ---------------------------------------------------------------

    async def send_json(self, data) -> None:
        await self.send(text_data=json.dumps(data, separators=(",", ":"), default=str))

    # ---- coalescing ------------------------------------------------------------

    def _schedule(self) -> None:
        if self.project is None:  # closed, or never let in
            return
        self._dirty = True
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        # Hints arriving while a push runs set _dirty again and go round once more.
        while self._dirty:
            wait = self._last_push + self.min_interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._push_now()

    async def _push_now(self) -> None:
        self._dirty = False
        self._last_push = asyncio.get_running_loop().time()
        try:
            refused = await self._access_refused()
            if refused is not None:
                self.project = None
                await self.close(code=refused)
                return
            await self.push()
        except Exception:
            log.exception("live push failed for %s", type(self).__name__)

    async def _access_refused(self) -> int | None:
        """The close code if the page may no longer see the project, else None.

        The user and membership were checked at connect, but a page stays open
        for hours: signing out (which deletes the session), a password change,
        a deactivated account or a removed membership must stop the pushes.
        The session is read afresh from its store; the scope's copy is stale.
        """
        user = self.scope.get("user")
        session = self.scope.get("session")
        key = getattr(session, "session_key", None) if session is not None else None
        if key is not None:
            store = import_module(settings.SESSION_ENGINE).SessionStore(key)
            current = await get_user({"session": store})
            if not current.is_authenticated or current.pk != user.pk:
                return CLOSE_UNAUTHENTICATED
            user = current
        if not await self._still_member(user):
            return CLOSE_FORBIDDEN
        return None

    @database_sync_to_async
    def _still_member(self, user) -> bool:
        fresh = get_user_model().objects.filter(pk=user.pk, is_active=True).first()
        return fresh is not None and Membership.has_role(fresh, self.project.pk, self.role)

    @database_sync_to_async
    def _project_for(self, user):
        projects = projects_of(user)
        slug = self.params.get("project")
        if slug:
            try:
                clean_text("project", slug)
            except BadParameter:
                return None
            project = projects.filter(slug=slug).first()
        else:
            session = self.scope.get("session")
            remembered = session.get(SESSION_PROJECT) if session is not None else None
            project = projects.filter(pk=remembered).first() if remembered else None
            project = project or projects.order_by("name").first()
        if project is None or not Membership.has_role(user, project.pk, self.role):
            return None
        return project
