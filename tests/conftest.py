"""One small named world shared by every test: a project (and a second one,
to prove isolation), tokens of each scope, and a user per role.

Tests run against a real PostgreSQL: DATABASE_URL when set (the Makefile
points it at the local server), otherwise the embedded one.
"""

import warnings

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db.backends.postgresql.operations import DatabaseOperations
from django.test.utils import override_settings

from collector.db import conninfo
from collector.models import ApiToken, Project, Scope
from dashboard.accounts.models import Membership, Role
from tests.aws import _moto_server, aws  # noqa: F401  (fixtures: moto's server for AWS tests)

# Every table the writer, the pollers and the background loops fill through
# their own connections. Django's flush empties only managed models' tables,
# so the raw-SQL ones must be here; the broker tables are managed, but are
# listed too, so a test starts empty even after one that left rows behind.
TELEMETRY_TABLES = (
    "collector_span",
    "collector_stage",
    "collector_envelope",
    "collector_flowrollup",
    "collector_failurerollup",
    "collector_log",
    "dashboard_flowhour",
    "dashboard_flowhour_state",
    "delivery_findinghour",
    "brokers_lagsample",
    "brokers_groupstate",
    "brokers_brokerstate",
)


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """The product's hasher with fewer rounds: a user made or signed in costs
    0.3 s of CPU at the production count, hundreds of times a suite. The
    rounds are kept in the hash, so a server started by a test (with the real
    settings) checks these passwords too, and upgrades them at sign-in."""

    iterations = 1_000


_sql_flush = DatabaseOperations.sql_flush
# Their triggers refuse DELETE (the audit log); TRUNCATE skips row triggers.
APPEND_ONLY_TABLES = {"audit_auditevent"}
# Made by migrations, changed by no test (see _sql_flush_by_delete).
KEPT_TABLES = {"django_content_type", "auth_permission"}


def _sql_flush_by_delete(self, style, tables, *, reset_sequences=False, allow_cascade=False):
    """Django empties every table after a transactional test with one TRUNCATE
    of all of them: 0.3 s on PostgreSQL (new files for every table), more than
    most such tests take. DELETE on the few rows a test leaves takes
    milliseconds; the flush runs in a transaction and Django's foreign keys
    are deferred, so the order does not matter. The content types and
    permissions stay: migrations made them, no test changes them, and
    post_migrate would make them again after every test."""
    if reset_sequences or allow_cascade:
        return _sql_flush(
            self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
        )
    statements = ["SET CONSTRAINTS ALL DEFERRED"]
    for table in tables:
        if table in APPEND_ONLY_TABLES:
            statements.append(f"TRUNCATE {self.quote_name(table)}")
        elif table not in KEPT_TABLES:
            statements.append(f"DELETE FROM {self.quote_name(table)}")
    return statements


@pytest.fixture(scope="session", autouse=True)
def quick_test_database():
    """Users hashed with few rounds, tables emptied by DELETE (see above)."""
    hashers = override_settings(PASSWORD_HASHERS=["tests.conftest.QuickPBKDF2PasswordHasher"])
    hashers.enable()
    DatabaseOperations.sql_flush = _sql_flush_by_delete
    yield
    DatabaseOperations.sql_flush = _sql_flush
    hashers.disable()


@pytest.fixture(scope="session", autouse=True)
def no_session_outlives_the_suite(django_db_setup):
    """The connection pool's idle connections are closed before the test
    database is dropped: open, they fail the drop and leave it on the server."""
    yield
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        connection.close()
        if getattr(connection, "pool", None) is not None:
            connection.close_pool()
    # Any other session still on it is a leak: named in a warning, then ended.
    with psycopg.connect(conninfo(), autocommit=True) as conn:
        left = conn.execute(
            "SELECT pg_terminate_backend(pid), application_name, state, left(query, 80)"
            " FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    if left:
        warnings.warn(f"sessions left on the test database at the end: {left}", stacklevel=1)


@pytest.fixture
def project(db):
    return Project.objects.create(name="Shop", slug="shop")


@pytest.fixture
def other_project(db):
    return Project.objects.create(name="Other team", slug="other")


@pytest.fixture
def ingest_token(project):
    """The plaintext of an ingest-scoped token of `project`."""
    return ApiToken.issue(project, "ci ingest", Scope.INGEST)[1]


@pytest.fixture
def read_token(project):
    return ApiToken.issue(project, "ci read", Scope.READ)[1]


def _member(username, project, role):
    user = get_user_model().objects.create_user(username, password="correct horse battery")
    Membership.objects.create(user=user, project=project, role=role)
    return user


@pytest.fixture
def viewer(project):
    return _member("vera", project, Role.VIEWER)


@pytest.fixture
def editor(project):
    return _member("ed", project, Role.EDITOR)


@pytest.fixture
def admin_user(project):
    return _member("ada", project, Role.ADMIN)


@pytest.fixture
def other_viewer(other_project):
    return _member("otto", other_project, Role.VIEWER)


def truncate_telemetry() -> None:
    """Empty every table in TELEMETRY_TABLES."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(TELEMETRY_TABLES)}")


@pytest.fixture
def telemetry_db(transactional_db):
    """A committed-data database for tests that go through the writer's own
    connections. Django's flush does not know the unmanaged telemetry tables,
    so they are emptied here, before and after."""
    truncate_telemetry()
    yield
    truncate_telemetry()
