"""Live-update hints from writers to web processes over PostgreSQL NOTIFY.

A hint says "something changed for project P in area A"; it carries no data
the page depends on. Web processes LISTEN on one channel, coalesce hints to
at most one push per view per second, and re-read PostgreSQL, which stays
the single source of truth. NOTIFY is transactional: a hint sent inside a
transaction is delivered only if it commits, so pages never see rolled-back
data.
"""

import json

CHANNEL = "eventscope"

# Areas a hint can name; each live view subscribes to the ones it shows.
FLOW, STAGES, FAILURES, LAG, ALERTS = "flow", "stages", "failures", "lag", "alerts"


def payload(project_id: int, area: str, **extra) -> str:
    # NOTIFY payloads are capped at 8000 bytes; hints stay tiny on purpose.
    return json.dumps({"project": project_id, "area": area, **extra}, separators=(",", ":"))


def send(cursor, project_id: int, area: str, **extra) -> None:
    """Queue a hint in the cursor's transaction (works with Django and psycopg cursors)."""
    cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload(project_id, area, **extra)))
