"""One small named world shared by every test: a project (and a second one,
to prove isolation), tokens of each scope, and a user per role.

Tests run against a real PostgreSQL: DATABASE_URL when set (the Makefile
points it at the local server), otherwise the embedded one.
"""

import pytest
from django.contrib.auth import get_user_model

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
