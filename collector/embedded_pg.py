"""The embedded PostgreSQL used when DATABASE_URL is unset.

`pgserver` ships PostgreSQL binaries in a wheel; the server keeps its data
under ./var/pg and listens on a Unix socket in that folder only, so a laptop
needs nothing installed. Several Eventscope processes share one server:
pgserver counts its users and stops the server when the last one exits.
"""

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)
# pgserver logs every pg_ctl call at INFO, including from atexit after logging closed.
logging.getLogger("pgserver").setLevel(logging.WARNING)

DATABASE_NAME = "eventscope"


def start(data_dir: Path):
    """Start (or join) the embedded server in `data_dir`; returns pgserver's handle."""
    with warnings.catch_warnings():
        # pgserver keeps its lock in the user's runtime folder, which it looks
        # up on import; without XDG_RUNTIME_DIR (a root shell, a container)
        # platformdirs warns and falls back to /tmp/runtime-<uid>, which
        # serves as well. A newcomer's first start should not print it.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(str(data_dir))


def database_settings(data_dir: Path) -> dict:
    """Start (or join) the embedded server and return a Django DATABASES entry."""
    server = start(data_dir)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        log.info("created database %s in the embedded PostgreSQL at %s", DATABASE_NAME, data_dir)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": str(data_dir),
        "PORT": "",
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {},
    }
