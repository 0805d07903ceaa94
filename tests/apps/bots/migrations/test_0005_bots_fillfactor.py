"""The bots table keeps free space in its pages so a fleet tick's state UPDATE is HOT (PostgreSQL)."""

from __future__ import annotations

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def test_given_the_migrated_schema_when_reading_the_bots_storage_options_then_pages_are_half_filled():
    with connection.cursor() as cur:
        cur.execute("SELECT reloptions FROM pg_class WHERE relname = 'bots'")
        (options,) = cur.fetchone()

    assert options == ["fillfactor=50"]
