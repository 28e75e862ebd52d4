"""ASGI entry point: `dashboard.asgi:application` for uvicorn or daphne.

HTTP goes to Django; websockets under /ws/ go to the live consumers.
GET /healthz (the process is up) and /readyz (the database answers) are
answered in front of both, as on every Eventscope port, so a load balancer
or Kubernetes can probe the web app however it is served.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

import psycopg  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from collector.connection_limits import raise_open_file_limit  # noqa: E402
from collector.db import conninfo  # noqa: E402
from collector.runtime import with_health  # noqa: E402
from dashboard.routing import websocket_urlpatterns  # noqa: E402

# The web app without the health checks: `manage.py serve` adds its own,
# which ask its running writer.
web_application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)


class Database:
    """Readiness of the web app on its own: the database answers SELECT 1."""

    async def ready(self) -> bool:
        # A fresh short-timeout connection per probe, outside Django's
        # connection handling: probes are seconds apart, and a dead server
        # must show at once, not after a pooled connection times out.
        try:
            async with await psycopg.AsyncConnection.connect(
                conninfo(), connect_timeout=2, autocommit=True
            ) as conn:
                await conn.execute("SELECT 1")
            return True
        except (psycopg.Error, OSError):
            return False


application = with_health(web_application, Database())

# Whatever server imports this, its connections may use every descriptor
# the system allows this process.
raise_open_file_limit()
