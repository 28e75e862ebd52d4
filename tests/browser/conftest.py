"""Browser test harness: the real ASGI app under uvicorn, the real collector,
and headless Chromium through Playwright.

`web_server` serves dashboard.asgi:application on 127.0.0.1:<free port> in
a background thread against the test database (committed data, so tests use
the `telemetry_db` fixture through it). `collector` runs the OTLP/HTTP
receiver with the real storage writer in another thread. `browser_page` is a
fresh page in a shared Chromium; `signed_in` logs a user in through the
login form and returns the page.
"""

import asyncio
import os
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

# Playwright's sync API runs an event loop in this thread; Django's async
# safety check would otherwise refuse the ORM calls the tests make between
# browser steps. The app itself runs in its own threads, unaffected.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("EVENTSCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery"  # the password tests/conftest.py gives every user


class ServerThread:
    """An asyncio loop in a daemon thread running `start()` until `stop()` is called."""

    def __init__(self, start, name):
        self._start = start
        self._ready = threading.Event()
        self._stop = None
        self._error = None
        self.value = None
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self):
        async def run():
            self._stop = asyncio.Event()
            try:
                async with self._start() as value:
                    self.value = value
                    self._ready.set()
                    await self._stop.wait()
            except BaseException as exc:  # surfaced to the test by __enter__
                self._error = exc
                self._ready.set()
            finally:
                # Views and token checks ran in asgiref's threads; their
                # kept-alive connections would block dropping the test database.
                await sync_to_async(connections.close_all)()
                await sync_to_async(connections.close_all, thread_sensitive=False)()
                connections.close_all()

        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(run())
        self.loop.close()

    def __enter__(self):
        self.thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"{self.thread.name} did not start in 30 s")
        if self._error is not None:
            raise self._error
        return self.value

    def __exit__(self, *exc):
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(15)


def _uvicorn(app_factory):
    import contextlib

    import uvicorn

    @contextlib.asynccontextmanager
    async def serve():
        config = uvicorn.Config(
            app_factory(),
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            ws_ping_interval=None,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            from dashboard.live import listener

            await listener.stop()
            server.should_exit = True
            await task

    return serve


@pytest.fixture
def web_server(telemetry_db):
    """Base URL of the web app (HTTP + websockets) served by uvicorn."""

    def app():
        from dashboard.asgi import application

        return application

    # Each request runs in a thread of its own; a connection kept alive
    # there outlives the thread and would block dropping the test database.
    database = connections["default"].settings_dict
    kept = database["CONN_MAX_AGE"]
    database["CONN_MAX_AGE"] = 0
    try:
        with ServerThread(_uvicorn(app), "eventscope-web") as url:
            yield url
    finally:
        database["CONN_MAX_AGE"] = kept


@pytest.fixture
def collector(telemetry_db):
    """Base URL of the OTLP/HTTP + CloudEvents receiver, writing with the real writer."""
    import contextlib

    from tests.collector.receiver_harness import http_receiver, running_writer

    @contextlib.asynccontextmanager
    async def start():
        async with running_writer() as writer, http_receiver(writer) as url:
            yield url

    with ServerThread(start, "eventscope-collector") as url:
        yield url


# Package scope: Playwright's sync API keeps an event loop running in this
# thread while it is open, which async tests in other packages cannot share.
@pytest.fixture(scope="package")
def chromium():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}; install it (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium):
    """A fresh page; a test fails if anything on it broke the Content-Security-Policy
    (Chromium reports each refused script, style or connection on the console)."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    violations = []
    page.on(
        "console",
        lambda message: (
            "Content Security Policy" in message.text
            and violations.append(f"{page.url}: {message.text}")
        ),
    )
    yield page
    context.close()
    assert not violations, "CSP violations:\n" + "\n".join(violations)


def sign_in(page, base_url: str, username: str, password: str = PASSWORD):
    """Log in through the login form, as a person would."""
    page.goto(f"{base_url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login/" not in url)
    return page


@pytest.fixture
def signed_in(browser_page, web_server, viewer):
    """A page signed in as the viewer of `project`, at the flow graph."""
    return sign_in(browser_page, web_server, viewer.username)
