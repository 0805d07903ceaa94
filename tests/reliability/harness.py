"""Shared pieces of the reliability suite: real data, polling, PostgreSQL backends, a private Redis, beat processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = ROOT / "sample_data"
MINUTE = 60_000


def real_candles(n: int = 300) -> pd.DataFrame:
    """Real Binance BTC/USDT 1m candles (sample_data, open-labelled -> close times)."""
    df = pd.read_csv(DATA / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", nrows=n)
    df["timestamp"] = df["timestamp"] + MINUTE
    return df[["timestamp", "open", "high", "low", "close", "volume"]].reset_index(drop=True)


def wait_until(predicate: Callable[[], object], *, what: str, limit_s: float = 60.0, every: float = 0.1):
    """Poll until predicate() is truthy; the limit only guards a hung suite (nothing is timed)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"gave up waiting ({limit_s:.0f}s) for: {what}")


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# --- PostgreSQL -----------------------------------------------------------------------------------------------------

def other_backends(*, waiting_on_lock: bool = False) -> list[int]:
    """pids of the other sessions on this test database (optionally only those waiting on a lock)."""
    from django.db import connection

    sql = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    if waiting_on_lock:
        sql += " AND wait_event_type = 'Lock'"
    with connection.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")  # pg_stat_activity is otherwise frozen per transaction
        cur.execute(sql)
        return [r[0] for r in cur.fetchall()]


def terminate_backend(pid: int) -> bool:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", [pid])
        return bool(cur.fetchone()[0])


# --- a private Redis (never restart the shared one) -----------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of our own on a free port, restartable. `persist=True` keeps an append-only file across
    restarts (what a broker needs to survive one); without it a restart loses every queued message."""

    def __init__(self, *, persist: bool = True) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="h12-redis-")
        self.persist = persist
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *aof, "--dir", self.dir,
             "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        wait_until(lambda: _pings(client), what=f"private redis on port {self.port}", limit_s=20)
        client.close()

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        self.proc = None

    def restart(self, sig: int = signal.SIGKILL) -> None:
        self.stop(sig)
        self.start()
        self.restarts += 1

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False


# --- processes ----------------------------------------------------------------------------------------------------

def process_env(*, redis_url: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process (beat, a script) on the pytest TEST database and the suite's Redis."""
    from django.conf import settings
    from django.db import connection

    from tests.celery_workers import _database_url

    url = _database_url(dict(settings.DATABASES["default"]), connection.settings_dict["NAME"])
    redis_url = redis_url or settings.REDIS_URL
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "tradebot.settings.test", "CELERY_TASK_ALWAYS_EAGER": "0", "DATABASE_URL": url,
        "REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url,
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    env.update(extra or {})
    return env


def start_process(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    log = tempfile.NamedTemporaryFile(prefix="h12-proc-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = log.name  # type: ignore[attr-defined]
    return proc


def log_tail(proc: subprocess.Popen, chars: int = 3000) -> str:
    try:
        return Path(proc.log_path).read_text()[-chars:]  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return ""


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def start_beat(env: dict[str, str], *, scheduler: str | None = None) -> subprocess.Popen:
    """`celery beat` with the project's scheduler (settings.CELERY_BEAT_SCHEDULER unless given)."""
    args = [sys.executable, "-m", "celery", "-A", "tradebot", "beat", "-l", "info", "--max-interval", "1",
            "--pidfile=", "-s", os.path.join(tempfile.mkdtemp(prefix="h12-beat-"), "schedule")]
    if scheduler:
        args += ["-S", scheduler]
    return start_process(args, env)


def start_worker_on(env: dict[str, str], *, queues: str, concurrency: int = 2, limit_s: float = 60.0):
    """A prefork `celery worker` with this environment (e.g. a private Redis), ready when its log says so."""
    name = f"h12-{os.getpid()}-{time.monotonic_ns()}@localhost"
    args = [sys.executable, "-m", "celery", "-A", "tradebot", "worker", "-Q", queues, "-c", str(concurrency), "-P",
            "prefork", "-n", name, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"]
    proc = start_process(args, env)

    def ready():
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}: {log_tail(proc)}")
        return " ready." in log_tail(proc, 100000)

    try:
        wait_until(ready, what="the worker to log ready", limit_s=limit_s, every=0.2)
    except AssertionError:
        stop_process(proc)
        raise AssertionError(f"worker not ready: {log_tail(proc)}") from None
    return proc


def start_bot(bot):
    """bot_start on a test market: the market is marked watched first (test exchange names are no ccxt ids, so the
    watch validation of the provider would refuse them), then the real service starts the bot."""
    from apps.bots import services
    from apps.market.services import get_or_create_market

    get_or_create_market(bot.exchange, bot.symbol, bot.timeframe, watched=True)
    return services.bot_start(bot=bot)
