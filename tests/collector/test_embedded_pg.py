"""With no DATABASE_URL, Eventscope starts its own PostgreSQL (pgserver)."""

import os
import subprocess
import sys

import psycopg

from collector.embedded_pg import DATABASE_NAME, database_settings, start


def test_embedded_postgres_starts_and_accepts_connections(tmp_path):
    config = database_settings(tmp_path / "pg")
    with psycopg.connect(dbname=config["NAME"], user=config["USER"], host=config["HOST"]) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == DATABASE_NAME
        # a second call joins the running server instead of starting another
        assert database_settings(tmp_path / "pg")["HOST"] == config["HOST"]
    start(tmp_path / "pg").cleanup()  # stop it now rather than at interpreter exit


def test_embedded_postgres_starts_without_a_warning_where_no_runtime_folder_is_set(tmp_path):
    """A root shell or a container has no XDG_RUNTIME_DIR; the first start
    must not greet the user with a library's warning about it."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    script = (
        "import sys, warnings; warnings.simplefilter('error')\n"
        "from pathlib import Path\n"
        "from collector.embedded_pg import start\n"
        "start(Path(sys.argv[1])).cleanup()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "pg")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
