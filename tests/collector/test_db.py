"""collector.db: the writer's own psycopg connections use what DATABASE_URL says,
TLS parameters included."""

import json
import subprocess
import sys

import trustme

from tests.test_commands import ROOT, command_env

PROBE = """
import json, django, psycopg
django.setup()
from django.db import connection
from psycopg.conninfo import conninfo_to_dict
from collector.db import conninfo
out = {"writer": conninfo_to_dict(conninfo()), "django": connection.get_connection_params()}
try:
    psycopg.connect(conninfo(), connect_timeout=5).close()
except psycopg.OperationalError as exc:
    out["error"] = str(exc)
print(json.dumps(out, default=str))
"""


def test_sslmode_and_sslrootcert_in_database_url_reach_django_and_the_writer(tmp_path):
    ca = trustme.CA()
    root = tmp_path / "root.crt"
    ca.cert_pem.write_to_path(str(root))
    env = command_env()
    env["DATABASE_URL"] += f"?sslmode=verify-full&sslrootcert={root}"
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    for side in ("writer", "django"):
        assert seen[side]["sslmode"] == "verify-full", side
        assert seen[side]["sslrootcert"] == str(root), side
    # libpq enforces it: the test server speaks no TLS, so the connection is refused
    # instead of falling back to plain text.
    assert "server does not support SSL" in seen["error"]
