"""Plain psycopg connections to the database Django is configured with.

The ingest path and the background loops talk to PostgreSQL with psycopg
directly (COPY, LISTEN, advisory locks); this keeps them on exactly the
database Django uses, including the test database under pytest.
"""

from django.db import connections


def conninfo(alias: str = "default") -> str:
    """A libpq connection string for the Django database `alias`."""
    from psycopg.conninfo import make_conninfo

    params = connections[alias].get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    params.pop("server_side_binding", None)
    params = {k: v for k, v in params.items() if v not in (None, "") and isinstance(v, str | int)}
    if "dbname" not in params and "database" in params:
        params["dbname"] = params.pop("database")
    return make_conninfo(**{k: str(v) for k, v in params.items()})
