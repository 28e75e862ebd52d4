"""Findings counted per hour, kept by the database as findings come and go.

The Delivery page counts a week of findings per consumer group, kind and
trend bucket; reading the hourly counts of the hours that lie inside one
bucket, and the findings themselves only for the rest (the window's ragged
ends and the hours a bucket boundary cuts), keeps those counts exact while
most of a week is read as a few rows per group and hour.

Statement-level triggers with transition tables apply every insert, update
and delete of `delivery_finding` (the pass, the out-of-order writer, retiring
a group, the hourly purge, a project's cascade) to `delivery_findinghour` in
the same transaction; a truncate empties it too. Rows are upserted in key
order, so two transactions writing findings of the same hours (the pass and
an editor retiring a group) wait for each other rather than deadlock.
"""

from django.db import migrations

SQL = """
CREATE TABLE delivery_findinghour (
    project_id      bigint      NOT NULL,
    hour            timestamptz NOT NULL,
    kind            varchar(16) NOT NULL,
    system          text        NOT NULL,
    channel         text        NOT NULL,
    consumer_group  text        NOT NULL,
    count           bigint      NOT NULL,
    extra           bigint      NOT NULL,  -- successes past the first, of duplicates
    PRIMARY KEY (project_id, hour, kind, system, channel, consumer_group)
);

CREATE FUNCTION delivery_findinghour_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        INSERT INTO delivery_findinghour AS h
        SELECT project_id, date_bin('1 hour', event_time, timestamptz '2000-01-01 00:00+00'),
               kind, system, channel, consumer_group, -count(*),
               -sum(greatest(successes - 1, 0))
        FROM gone GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (project_id, hour, kind, system, channel, consumer_group) DO UPDATE
        SET count = h.count + excluded.count, extra = h.extra + excluded.extra;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO delivery_findinghour AS h
        SELECT project_id, date_bin('1 hour', event_time, timestamptz '2000-01-01 00:00+00'),
               kind, system, channel, consumer_group, count(*),
               sum(greatest(successes - 1, 0))
        FROM added GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (project_id, hour, kind, system, channel, consumer_group) DO UPDATE
        SET count = h.count + excluded.count, extra = h.extra + excluded.extra;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        DELETE FROM delivery_findinghour h USING (
            SELECT DISTINCT project_id,
                   date_bin('1 hour', event_time, timestamptz '2000-01-01 00:00+00') AS hour,
                   kind, system, channel, consumer_group FROM gone) g
        WHERE h.project_id = g.project_id AND h.hour = g.hour AND h.kind = g.kind
          AND h.system = g.system AND h.channel = g.channel
          AND h.consumer_group = g.consumer_group AND h.count <= 0;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION delivery_findinghour_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE delivery_findinghour;
    RETURN NULL;
END $$;

CREATE TRIGGER delivery_findinghour_insert AFTER INSERT ON delivery_finding
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_findinghour_apply();
CREATE TRIGGER delivery_findinghour_update AFTER UPDATE ON delivery_finding
    REFERENCING OLD TABLE AS gone NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_findinghour_apply();
CREATE TRIGGER delivery_findinghour_delete AFTER DELETE ON delivery_finding
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_findinghour_apply();
CREATE TRIGGER delivery_findinghour_truncate AFTER TRUNCATE ON delivery_finding
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_findinghour_truncate();

INSERT INTO delivery_findinghour
SELECT project_id, date_bin('1 hour', event_time, timestamptz '2000-01-01 00:00+00'),
       kind, system, channel, consumer_group, count(*), sum(greatest(successes - 1, 0))
FROM delivery_finding GROUP BY 1, 2, 3, 4, 5, 6;
"""

REVERSE = """
DROP TRIGGER delivery_findinghour_insert ON delivery_finding;
DROP TRIGGER delivery_findinghour_update ON delivery_finding;
DROP TRIGGER delivery_findinghour_delete ON delivery_finding;
DROP TRIGGER delivery_findinghour_truncate ON delivery_finding;
DROP FUNCTION delivery_findinghour_apply();
DROP FUNCTION delivery_findinghour_truncate();
DROP TABLE delivery_findinghour;
"""


class Migration(migrations.Migration):
    dependencies = [("delivery", "0001_initial")]

    operations = [migrations.RunSQL(SQL, REVERSE)]
