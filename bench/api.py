"""Benchmark: candle and trade list endpoints under load, gunicorn + PostgreSQL on loopback. Prints ONE JSON line.

Ours: `GET /api/v1/market/candles/?...&limit=1000` (cursor on close time) and `GET /api/v1/bots/{id}/trades/?limit=1000`
(limit/offset envelope; bot, count and page in one query), both passing through the JSON rows PostgreSQL wrote,
token-authenticated, through the whole middleware/auth/throttle stack. Baseline in the same run, same server, same
data: the stock DRF path — `ModelSerializer(many=True)` + `LimitOffsetPagination` + `JSONRenderer`
(bench/api_app/urls.py).

Steady state: the scratch database is VACUUM ANALYZEd after loading (as autovacuum would on a live server).
Load: an open-loop, bounded client (aiohttp, requests scheduled at a fixed RATE for DURATION seconds whatever the
answers, at most MAX_IN_FLIGHT outstanding; latency from the scheduled send time, so queueing counts; every 10th body
is parsed and its row count checked, every answer must be a 200 with a body). Each endpoint is
warmed up, then measured alone. Pages start at random offsets (random cursors) across 100,000 real Binance BTC/USDT
1m candles and 20,000 trades. Server: gunicorn, WORKERS sync workers. Scratch database `<db>_bench_api`, dropped after.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.load import open_loop  # noqa: E402 - the repo root is on the path from here

RATE = int(os.environ.get("BENCH_API_RATE", "200"))
DURATION = float(os.environ.get("BENCH_API_SECONDS", "10"))
WORKERS = int(os.environ.get("BENCH_API_WORKERS", "4"))
MAX_IN_FLIGHT = 64
CANDLES = 100_000
TRADES = 20_000
EX, SYM, TF = "bench", "BTC/USDT", "1m"


def _db_urls() -> tuple[str, str]:
    url = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/tradebot"
    u = urlparse(url)
    scratch = f"{u.path.lstrip('/') or 'tradebot'}_bench_api"
    return url, u._replace(path=f"/{scratch}").geturl()


def _admin(url: str, sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(urlparse(url)._replace(path="/postgres").geturl())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def _prepare(scratch_url: str) -> dict:
    """Migrate the scratch database and load the data (in a child process: Django settings bound to it)."""
    code = r'''
import json, sys
import django
django.setup()
import numpy as np, pandas as pd
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from apps.bots.models import Bot, Trade
from apps.market.services import ingest_candles
df = pd.read_csv("sample_data/binance_spot_2023/binance_BTC_USDT-1m.csv.gz", nrows=CANDLES)
df["timestamp"] = df["timestamp"] + 60_000
ingest_candles(exchange="bench", symbol="BTC/USDT", timeframe="1m", df=df, publish=False)
bot = Bot.objects.create(name="bench", strategy="sma_cross", parameters={"fast": 5, "slow": 50}, exchange="bench",
                         symbol="BTC/USDT", timeframe="1m")
closes = df["close"].to_numpy(); ts = df["timestamp"].to_numpy()
rows = []
for i in range(TRADES):
    j = i * (len(df) // TRADES)
    side = "buy" if i % 2 == 0 else "sell"
    rows.append(Trade(bot=bot, timestamp=int(ts[j]), side=side, price=float(closes[j]), amount=0.1, fee=0.01,
                      realized_pnl=0.0 if side == "buy" else float(closes[j] - closes[j - 1]) * 0.1,
                      cash_after=10_000.0, position_after=0.1 if side == "buy" else 0.0))
Trade.objects.bulk_create(rows, batch_size=5000)
user = User.objects.create_user("bench", password="bench-pass-123")
from apps.market.models import Candle
print(json.dumps({"token": Token.objects.create(user=user).key, "bot": bot.pk,
                  "first": int(ts[0]), "last": int(ts[-1]),
                  "candles": Candle.objects.filter(exchange="bench").count()}))
'''.replace("CANDLES", str(CANDLES)).replace("TRADES", str(TRADES))
    env = {**os.environ, "DATABASE_URL": scratch_url, "DJANGO_SETTINGS_MODULE": "tradebot.settings.test"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    _admin_db(scratch_url, "VACUUM ANALYZE")  # steady state (autovacuum's job on a live server): stats + visibility map
    return json.loads(out.stdout.strip().splitlines()[-1])


def _admin_db(url: str, sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def _start_gunicorn(scratch_url: str):
    import re

    env = {**os.environ, "DATABASE_URL": scratch_url, "DJANGO_SETTINGS_MODULE": "api_app.settings",
           "TRADEBOT_THROTTLE_USER": "100000000/minute", "CELERY_TASK_ALWAYS_EAGER": "1"}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "tradebot.wsgi", "--bind", "127.0.0.1:0",
                             "--workers", str(WORKERS), "--pythonpath", str(ROOT / "bench"), "--log-level", "info"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url, booted = None, 0
    while booted < WORKERS:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError("gunicorn died")
        m = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", line)
        url = m.group(1) if m else url
        booted += "Booting worker" in line
    import threading

    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, url


CHECK_EVERY = 10  # parse every 10th body (row count); the client shares the 2 cores with the server it measures


def _page_check(rows: int):
    """A 200 with a body; every CHECK_EVERY-th one parsed for its row count (the client shares the 2 cores)."""
    seen = itertools.count()

    def ok(status: int, body: bytes) -> bool:
        if status != 200 or len(body) <= 1000:
            return False
        if next(seen) % CHECK_EVERY:
            return True
        page = json.loads(body)
        return len(page.get("rows") or page["results"]) == rows

    return ok


async def _load(session, make_url, headers, rate: float, seconds: float, rows: int) -> dict:
    figures = await open_loop(session, make_url, headers, rate, seconds, _page_check(rows), max_in_flight=MAX_IN_FLIGHT)
    return figures.as_dict()


async def _run(base: str, info: dict) -> dict:
    import aiohttp

    headers = {"Authorization": f"Token {info['token']}"}
    span = info["last"] - info["first"]

    def candles_ours():
        after = info["first"] + random.randrange(0, span - 2000 * 60_000)  # a full page after any cursor
        return f"{base}/api/v1/market/candles/?exchange={EX}&symbol={SYM}&timeframe={TF}&limit=1000&after={after}"

    def candles_base():
        return (f"{base}/baseline/candles/?exchange={EX}&symbol={SYM}&timeframe={TF}&limit=1000"
                f"&offset={random.randrange(0, info['candles'] - 1000)}")

    def trades_ours():
        return f"{base}/api/v1/bots/{info['bot']}/trades/?limit=1000&offset={random.randrange(0, TRADES - 1000)}"

    def trades_base():
        return f"{base}/baseline/bots/{info['bot']}/trades/?limit=1000&offset={random.randrange(0, TRADES - 1000)}"

    out = {}
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:
        for name, fn in (("candles", candles_ours), ("candles_baseline", candles_base), ("trades", trades_ours),
                         ("trades_baseline", trades_base)):
            await _load(session, fn, headers, 20, 2, 1000)  # warm-up (connections, caches)
            out[name] = await _load(session, fn, headers, RATE, DURATION, 1000)
    return out


def main() -> None:
    random.seed(7)
    url, scratch = _db_urls()
    name = urlparse(scratch).path.lstrip("/")
    _admin(url, f'DROP DATABASE IF EXISTS "{name}"')
    _admin(url, f'CREATE DATABASE "{name}"')
    proc = None
    try:
        info = _prepare(scratch)
        proc, base = _start_gunicorn(scratch)
        results = asyncio.run(_run(base, info))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
        _admin(url, f'DROP DATABASE IF EXISTS "{name}"')
    line = {"bench": "api", "rate_rps": RATE, "seconds": DURATION, "gunicorn_workers": WORKERS, "page_rows": 1000,
            **results,
            "p99_ratio_candles": round(results["candles_baseline"]["p99_ms"] / results["candles"]["p99_ms"], 2),
            "p99_ratio_trades": round(results["trades_baseline"]["p99_ms"] / results["trades"]["p99_ms"], 2),
            "target": "p99 <= 50 ms at 200 req/s"}
    print(json.dumps(line))


if __name__ == "__main__":
    main()
