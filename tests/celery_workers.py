"""Fixture module: real `celery worker` subprocesses against the pytest-django TEST database and the suite's Redis.

Use in a test module with `from tests.celery_workers import real_celery_worker  # noqa: F401` (or `pytest_plugins`), and
mark tests `@pytest.mark.django_db(transaction=True)` + `@pytest.mark.workers` (the worker reads committed rows from
another process, so the test data must be committed, not wrapped in the test's transaction).

Also holds `FlakyStrategy` (registry name "h6_flaky_sma_cross"), a sma_cross that raises a transient
OperationalError on its first compute of a run (counted in Redis), to prove that chunk retries work on real workers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLAKY_KEY = "tradebot:test:flaky_strategy_calls"


def start_worker(*, concurrency: int = 2, queues: str = "backtest", database_name: str | None = None,
                 extra_env: dict[str, str] | None = None, hostname: str | None = None,
                 timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Start `celery -A tradebot worker` as a subprocess and wait until it answers ping. Returns (process, name)."""
    import dj_database_url
    from django.conf import settings
    from django.db import connection

    from tradebot.celery import app

    db = dict(settings.DATABASES["default"])
    name = database_name or connection.settings_dict["NAME"]
    url = _database_url(db, name)
    hostname = hostname or f"h6test-{os.getpid()}-{time.monotonic_ns()}@localhost"
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "tradebot.settings.test",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "DATABASE_URL": url,
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    env.update(extra_env or {})
    assert dj_database_url.parse(url)["NAME"] == name
    log = tempfile.NamedTemporaryFile(prefix="celery-worker-", suffix=".log", delete=False)  # noqa: SIM115
    cmd = [sys.executable, "-m", "celery", "-A", "tradebot", "worker", "-Q", queues, "-c", str(concurrency),
           "-P", "prefork", "-n", hostname, "--without-gossip", "--without-mingle", "--without-heartbeat",
           "-l", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = log.name  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
        replies = app.control.ping(destination=[hostname], timeout=0.5)
        if any(hostname in r for r in replies):
            return proc, hostname
    tail = Path(log.name).read_text()[-2000:]  # before stop_worker removes the log
    stop_worker(proc)
    raise RuntimeError(f"celery worker did not answer ping within {timeout:.0f}s: {tail}")


def stop_worker(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Warm shutdown (SIGTERM to the main process), then SIGKILL of its process group if it does not exit in time."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    with contextlib.suppress(OSError, AttributeError):
        os.unlink(proc.log_path)  # type: ignore[attr-defined]


def _database_url(db: dict, name: str) -> str:
    user = db.get("USER") or "postgres"
    password = db.get("PASSWORD") or ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    auth = f"{user}:{password}@" if password else f"{user}@"
    return f"postgres://{auth}{host}:{port}/{name}"


@contextlib.contextmanager
def workers_active(concurrency: int = 2, **kwargs):
    """Context manager: a running worker, and this process dispatching for real (not eagerly)."""
    from tradebot.celery import app

    was_eager = app.conf.task_always_eager
    app.control.purge()  # stale messages of an interrupted earlier run must not reach this worker
    proc, name = start_worker(concurrency=concurrency, **kwargs)
    app.conf.task_always_eager = False
    try:
        yield name
    finally:
        app.conf.task_always_eager = was_eager
        stop_worker(proc)


@pytest.fixture
def real_celery_worker(transactional_db, redis_client):
    """A real prefork worker (2 processes) on queue `backtest` against the test database; stopped afterwards."""
    redis_client.delete(FLAKY_KEY)
    env = {"TRADEBOT_STRATEGIES": "tests.celery_workers.FlakyStrategy"}
    with workers_active(concurrency=2, extra_env=env) as name:
        yield name
    redis_client.delete(FLAKY_KEY)


def _make_flaky():
    from django.db import OperationalError

    from apps.bots.strategies.registry import get_strategy_class

    base = get_strategy_class("sma_cross")

    class FlakyStrategy(base):
        """sma_cross whose first compute (across all worker processes) raises a transient database error."""

        name = "h6_flaky_sma_cross"

        def compute(self, *args, **kwargs):
            import redis
            from django.conf import settings

            calls = redis.Redis.from_url(settings.REDIS_URL).incr(FLAKY_KEY)
            if calls == 1:
                raise OperationalError("simulated transient failure (first call)")
            return super().compute(*args, **kwargs)

    return FlakyStrategy


def __getattr__(name: str):
    """FlakyStrategy is built lazily: the strategy base class is only importable once Django is set up."""
    if name == "FlakyStrategy":
        cls = _make_flaky()
        globals()["FlakyStrategy"] = cls
        return cls
    raise AttributeError(name)
