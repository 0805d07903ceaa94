"""Benchmark: 1,000,000 candles into PostgreSQL (default server config, fsync on). Prints ONE JSON line.

Ours = `apps.market.services.ingest_candles` (validation + binary COPY into a temp table + one
INSERT .. ON CONFLICT DO UPDATE .. WHERE IS DISTINCT FROM + ledger refresh, one transaction):
  fresh (empty table), re-ingest of identical rows (all conflicts, nothing rewritten) and re-ingest with every
  row changed (all conflicts, all updated).
Baselines timed in the same run: psycopg2 `execute_values` upsert (page 1000, ON CONFLICT DO UPDATE) into an empty
table, and per-row ORM `Candle.objects.create` in one transaction on a 20,000-row subset, extrapolated to rows/s.
Medians of 3 timed runs after an untimed warm-up; input (the real Binance BTC/USDT 1m sample tiled to 1M rows with
consecutive close times) is built before timing. Uses a scratch database `tradebot_bench_ingest`, created and dropped.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROWS = 1_000_000
ORM_ROWS = 20_000
SCRATCH = "tradebot_bench_ingest"
EX, SYM, TF = "bench", "BTC/USDT", "1m"


def _server_url() -> str:
    url = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    return url


def _admin(sql: str) -> None:
    import psycopg2

    u = urlparse(_server_url())
    conn = psycopg2.connect(host=u.hostname, port=u.port or 5432, user=u.username, password=u.password,
                            dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def _setup_django() -> None:
    u = urlparse(_server_url())
    auth = u.username + (f":{u.password}" if u.password else "")
    os.environ["DATABASE_URL"] = f"postgres://{auth}@{u.hostname}:{u.port or 5432}/{SCRATCH}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "tradebot.settings.base"
    os.environ["DJANGO_DEBUG"] = "0"  # no query log
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def _input():
    import numpy as np
    import pandas as pd

    from apps.market.csvio import read_candle_csv

    real = read_candle_csv(ROOT / "sample_data" / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz",
                           timeframe="1m", time_label="open")
    reps = -(-ROWS // len(real))
    df = pd.concat([real] * reps, ignore_index=True).iloc[:ROWS].reset_index(drop=True)
    df["timestamp"] = int(real["timestamp"].iat[0]) + np.arange(ROWS, dtype=np.int64) * 60_000
    return df


def _truncate() -> None:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("TRUNCATE market_data, market_coveredrange, market_datagap, market_market CASCADE")
        cur.execute("VACUUM ANALYZE market_data")


def _median_rate(fn, rows: int, prepare=None, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        if prepare:
            prepare()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return rows / statistics.median(times)


def main() -> None:
    _admin(f"DROP DATABASE IF EXISTS {SCRATCH}")
    _admin(f"CREATE DATABASE {SCRATCH}")
    try:
        _setup_django()
        result = run()
    finally:
        from django.db import connections

        connections.close_all()
        _admin(f"DROP DATABASE IF EXISTS {SCRATCH}")
    print(json.dumps(result))


def run() -> dict:
    from django.db import connection, transaction
    from psycopg2.extras import execute_values

    from apps.market.models import Candle
    from apps.market.services import ingest_candles

    df = _input()

    def ours(frame=df):
        res = ingest_candles(exchange=EX, symbol=SYM, timeframe=TF, df=frame, publish=False)
        assert res.stored == len(frame) and not res.rejected
        return res

    # warm-up (untimed), then fresh runs on an empty table
    _truncate()
    ours(df.iloc[:50_000])
    fresh = _median_rate(ours, ROWS, prepare=_truncate)
    assert Candle.objects.count() == ROWS
    # all conflicts, identical values (table holds the 1M rows from the last fresh run)
    ours()
    conflict = _median_rate(lambda: ours(), ROWS)
    # all conflicts, every row changed (volume differs each run)
    changed_frames = [df.assign(volume=df["volume"] + k) for k in (1.0, 2.0, 3.0, 4.0)]
    it = iter(changed_frames)
    ours(next(it))
    changed = _median_rate(lambda: ours(next(it)), ROWS)

    # baseline: psycopg2 execute_values upsert, page 1000, into an empty table
    rows = list(zip([EX] * ROWS, [SYM] * ROWS, [TF] * ROWS, df["timestamp"].tolist(), df["open"].tolist(),
                    df["high"].tolist(), df["low"].tolist(), df["close"].tolist(), df["volume"].tolist(),
                    strict=True))
    sql = (
        "INSERT INTO market_data (exchange, symbol, timeframe, timestamp, open, high, low, close, volume) VALUES %s "
        "ON CONFLICT (exchange, symbol, timeframe, timestamp) DO UPDATE SET open = EXCLUDED.open, "
        "high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close, volume = EXCLUDED.volume"
    )

    def ev(subset=rows):
        with transaction.atomic(), connection.cursor() as cur:
            execute_values(cur.cursor, sql, subset, page_size=1000)

    _truncate()
    ev(rows[:50_000])
    ev_rate = _median_rate(ev, ROWS, prepare=_truncate)

    # baseline: per-row ORM on a 20k subset, extrapolated
    orm_rows = rows[:ORM_ROWS]

    def orm(subset=orm_rows):
        with transaction.atomic():
            for _, _, _, t, o, h, lo, c, v in subset:
                Candle.objects.create(exchange=EX, symbol=SYM, timeframe=TF, timestamp=t, open=o, high=h, low=lo,
                                      close=c, volume=v)

    _truncate()
    orm(orm_rows[:2_000])
    orm_rate = _median_rate(orm, ORM_ROWS, prepare=_truncate)

    return {
        "bench": "ingest",
        "rows": ROWS,
        "ours_fresh_rows_s": round(fresh),
        "ours_conflict_rows_s": round(conflict),
        "ours_conflict_changed_rows_s": round(changed),
        "execute_values_rows_s": round(ev_rate),
        "orm_rows_s": round(orm_rate),
        "orm_note": f"per-row Candle.objects.create in one transaction, timed on {ORM_ROWS} rows, extrapolated",
        "fresh_vs_execute_values": round(fresh / ev_rate, 2),
        "conflict_vs_execute_values": round(conflict / ev_rate, 2),
        "changed_vs_execute_values": round(changed / ev_rate, 2),
        "fresh_vs_orm": round(fresh / orm_rate, 1),
        "ours_includes": "validation + COPY + upsert + ledger refresh, one transaction",
        "targets": {"fresh_rows_s": 100_000, "conflict_rows_s": 70_000},
    }


if __name__ == "__main__":
    main()
