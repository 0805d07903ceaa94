"""Suite-wide fixtures. The suite needs real PostgreSQL and Redis: a missing service fails the run with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parent.parent / "sample_data"


def pytest_sessionstart(session: pytest.Session) -> None:
    import redis
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        raise pytest.UsageError(f"the suite runs on PostgreSQL; DATABASES uses {db['ENGINE']} (run `make test`)")
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        raise pytest.UsageError(f"Redis at {settings.REDIS_URL} is not reachable ({exc}); run `make services`")


@pytest.fixture
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture
def redis_client():
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()
