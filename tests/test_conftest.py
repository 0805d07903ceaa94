"""The two ways to run the suite: `make test` (services required: a missing one fails the run, never a skip) and
`make test-fast` (`pytest --fast`: pure-module tests only, with no PostgreSQL or Redis at all)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEAD_PG = "postgres://postgres@127.0.0.1:1/nothing_listens_here"
DEAD_REDIS = "redis://127.0.0.1:1/0"


def pytest_run(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    full.update(DJANGO_SETTINGS_MODULE="tradebot.settings.test", **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=300)


def test_given_no_postgres_and_no_redis_when_run_with_fast_then_pure_tests_pass_and_others_are_not_collected():
    done = pytest_run("--fast", "tests/tradebot/settings/", "tests/apps/market/test_csvio.py",
                      DATABASE_URL=DEAD_PG, REDIS_URL=DEAD_REDIS)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout
    assert "test_production" not in done.stdout and "error" not in done.stdout.lower()


def test_given_postgres_down_when_the_full_suite_starts_then_it_fails_naming_postgres():
    done = pytest_run("tests/tradebot/settings/test_env.py", DATABASE_URL=DEAD_PG)

    assert done.returncode != 0
    assert "PostgreSQL at 127.0.0.1:1 is not reachable" in done.stdout + done.stderr
    assert " passed" not in done.stdout and "skipped" not in done.stdout


def test_given_redis_down_when_the_full_suite_starts_then_it_fails_naming_redis():
    done = pytest_run("tests/tradebot/settings/test_env.py", REDIS_URL=DEAD_REDIS)

    assert done.returncode != 0
    assert f"Redis at {DEAD_REDIS} is not reachable" in done.stdout + done.stderr
    assert " passed" not in done.stdout and "skipped" not in done.stdout
