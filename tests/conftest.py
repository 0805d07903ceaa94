"""Suite-wide fixtures. The suite needs real PostgreSQL and Redis: a missing service fails the run with the reason.

`pytest --fast` (`make test-fast`) runs only the tests of the pure modules (FAST_TESTS: strategies, indicators, fill
rules, engine, metrics, sweep/walk-forward kernels, aggregation, validation, csvio, timeframes, env parsing), which need
no PostgreSQL, Redis or worker; any of their tests that asks for the database or Redis is deselected. Without
`--fast` the services are checked first and a missing one fails the run (never a skip).
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
DATA_DIR = TESTS_DIR.parent / "sample_data"

#: Test files / folders of the pure modules (relative to tests/): what `make test-fast` runs.
FAST_TESTS = (
    "apps/bots/strategies",
    "apps/bots/trading",
    "apps/backtest/engine",
    "apps/backtest/test_sweep_engine.py",
    "apps/backtest/test_walkforward_engine.py",
    "apps/market/test_aggregation.py",
    "apps/market/test_live.py",
    "apps/market/test_validation.py",
    "apps/market/test_csvio.py",
    "apps/market/test_timeframes.py",
    "tradebot/settings/test_env.py",
    "tradebot/test_memory.py",
)
#: Fixtures that reach PostgreSQL, Redis or a worker: a test using one is not a --fast test.
SERVICE_FIXTURES = frozenset({
    "db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback", "django_db_setup",
    "live_server", "client", "admin_client", "admin_user", "django_user_model", "redis_client", "real_celery_worker",
})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fast", action="store_true", default=False,
                     help="only the pure-module tests (FAST_TESTS in tests/conftest.py): no PostgreSQL, Redis or "
                          "workers needed (make test-fast)")


def _fast(config: pytest.Config) -> bool:
    return bool(config.getoption("--fast"))


def _in_fast_tests(path: Path) -> bool:
    try:
        rel = path.resolve().relative_to(TESTS_DIR)
    except ValueError:
        return False
    rel_s = rel.as_posix()
    return any(rel_s == entry or rel_s.startswith(entry + "/") or entry.startswith(rel_s + "/") or rel_s == "."
               for entry in FAST_TESTS)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if not _fast(config) or collection_path.name in ("conftest.py", "__init__.py"):
        return None
    if collection_path.is_dir() or collection_path.suffix == ".py":
        return None if _in_fast_tests(collection_path) else True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _fast(config):
        return
    keep, drop = [], []
    for item in items:
        needs = item.get_closest_marker("django_db") or item.get_closest_marker("workers") or (
            SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())))
        (drop if needs else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_sessionstart(session: pytest.Session) -> None:
    if _fast(session.config):
        return
    import psycopg2
    import redis
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        raise pytest.UsageError(f"the suite runs on PostgreSQL; DATABASES uses {db['ENGINE']} (run `make test`)")
    where = f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}"
    try:
        psycopg2.connect(dbname="postgres", user=db.get("USER") or None, password=db.get("PASSWORD") or None,
                         host=db.get("HOST") or None, port=db.get("PORT") or None, connect_timeout=3).close()
    except psycopg2.Error as exc:
        raise pytest.UsageError(f"PostgreSQL at {where} is not reachable ({' '.join(str(exc).split())}); "
                                "run `make services`")
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
