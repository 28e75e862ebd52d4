"""With no DATABASE_URL, Eventscope starts its own PostgreSQL (pgserver)."""

import psycopg

from collector.embedded_pg import DATABASE_NAME, database_settings, start


def test_embedded_postgres_starts_and_accepts_connections(tmp_path):
    config = database_settings(tmp_path / "pg")
    with psycopg.connect(dbname=config["NAME"], user=config["USER"], host=config["HOST"]) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == DATABASE_NAME
        # a second call joins the running server instead of starting another
        assert database_settings(tmp_path / "pg")["HOST"] == config["HOST"]
    start(tmp_path / "pg").cleanup()  # stop it now rather than at interpreter exit
