import datetime as dt

from django.db import connection

from collector import partitions


def test_partitions_are_created_once_and_dropped_whole(db):
    days = [dt.date(2030, 1, 1), dt.date(2030, 1, 2)]
    with connection.cursor() as cursor:
        partitions.ensure(cursor, days)
        partitions.ensure(cursor, days)  # idempotent
        have = partitions.existing(cursor, "collector_stage")
        assert set(days) <= set(have)
        cursor.execute(
            "INSERT INTO collector_stage (project_id, time, dedupe_key, stage, role, service, origin)"
            " VALUES (1, '2030-01-01T10:00:00Z', '\\x01', 'published', 'producer', 'orders', 2)"
        )
        dropped = partitions.drop_older_than(cursor, dt.date(2030, 1, 2))
        assert "collector_stage_p20300101" in dropped
        assert "collector_stage_p20300102" not in dropped
        cursor.execute("SELECT count(*) FROM collector_stage")
        assert cursor.fetchone()[0] == 0
