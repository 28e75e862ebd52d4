"""Shared fixtures of the dashboard tests."""

import pytest
from channels.db import database_sync_to_async
from django.db import connections


@pytest.fixture
async def consumer_connections():
    """Close the database connections consumers opened in Channels' worker thread.

    Settings keep connections for 60 s; left open they would block dropping
    the test database at the end of the run.
    """
    yield
    await database_sync_to_async(connections.close_all)()
