"""Bulk idempotent upserts of candles and raw trades, inside the caller's transaction.

PostgreSQL: the batch (one market's frame, or several markets' frames tagged with their position) is streamed with
ONE binary COPY (built with a numpy structured array: no per-row Python and no float formatting, so values
round-trip bit-exactly) into a temp table without indexes, then a single
`INSERT .. SELECT .. ON CONFLICT DO UPDATE .. WHERE (..) IS DISTINCT FROM (..)`: re-ingesting identical data rewrites
nothing. `RETURNING (xmax = 0)` tells inserted rows from updated ones. When nothing is stored yet in the batch's time
range (the common "new candles" and bulk-history case) a plain INSERT .. SELECT is used instead (~1.5x faster).
SQLite (embedded default): pre-select the stored rows of the range, write only new/changed rows with `executemany`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from django.db import IntegrityError, connection, transaction

PRICE_FIELDS = ("open", "high", "low", "close", "volume")
_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_PG_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
_CANDLE_ROW = np.dtype(
    [("n", ">i2"), ("l_k", ">i4"), ("k", ">i4"), ("l_ts", ">i4"), ("ts", ">i8")]
    + [item for name in PRICE_FIELDS for item in ((f"l_{name}", ">i4"), (name, ">f8"))]
)
_STAGE = "tb_candle_stage"
_TRADE_STAGE = "tb_trade_stage"


@dataclass
class UpsertResult:
    """Outcome of one upsert: inserted close times (ascending), how many existing rows changed / were identical, and
    the close times of the changed ones (ascending: a corrected candle is announced again)."""

    inserted: list[int] = field(default_factory=list)
    updated: int = 0
    unchanged: int = 0
    updated_timestamps: list[int] = field(default_factory=list)


def candles_copy_buffer(frames: list[pd.DataFrame]) -> bytes:
    """PostgreSQL binary COPY payload (k int4 = the frame's 1-based position, timestamp bigint, open..volume float8)
    of candle frames."""
    rows = np.empty(sum(len(df) for df in frames), dtype=_CANDLE_ROW)
    rows["n"] = 7
    rows["l_k"] = 4
    rows["l_ts"] = 8
    for name in PRICE_FIELDS:
        rows[f"l_{name}"] = 8
    at = 0
    for k, df in enumerate(frames, start=1):
        part = rows[at:at + len(df)]
        part["k"] = k
        part["ts"] = df["timestamp"].to_numpy(dtype=np.int64)
        for name in PRICE_FIELDS:
            part[name] = df[name].to_numpy(dtype=np.float64)
        at += len(df)
    return _PG_COPY_HEADER + rows.tobytes() + _PG_COPY_TRAILER


@dataclass(frozen=True)
class CandleFrame:
    """One market's VALIDATED candles (unique timestamps) for upsert_candles_many."""

    exchange: str
    symbol: str
    timeframe: str
    df: pd.DataFrame

    @property
    def key(self) -> tuple[str, str, str]:
        return self.exchange, self.symbol, self.timeframe


def upsert_candles(*, exchange: str, symbol: str, timeframe: str, df: pd.DataFrame) -> UpsertResult:
    """Insert or update a VALIDATED candle frame (unique timestamps), in a savepoint of the caller's transaction."""
    return upsert_candles_many([CandleFrame(exchange, symbol, timeframe, df)])[0]


def upsert_candles_many(frames: list[CandleFrame]) -> list[UpsertResult]:
    """upsert_candles of several markets at once, one result per frame: on PostgreSQL one COPY and one statement for
    all of them (a stream process stores every market's minute together: a round trip per market was most of the
    last market's latency). One frame per market."""
    keys = [f.key for f in frames]
    if len(set(keys)) != len(keys):
        raise ValueError("upsert_candles_many: one frame per market")
    todo = [f for f in frames if len(f.df)]
    if not todo:
        return [UpsertResult() for _ in frames]
    with transaction.atomic():
        if connection.vendor == "postgresql":
            done = _upsert_candles_pg(todo)
        else:
            done = {f.key: _upsert_candles_generic(*f.key, f.df) for f in todo}
    return [done.get(k, UpsertResult()) for k in keys]


def _upsert_candles_pg(frames: list[CandleFrame]) -> dict[tuple[str, str, str], UpsertResult]:
    columns = [list(c) for c in zip(*(f.key for f in frames), strict=True)]  # exchanges, symbols, timeframes
    # One frame (an import's million rows): the key as constants, not an array subscript per row (~25 % faster).
    one = len(frames) == 1
    keys = list(frames[0].key) if one else columns
    spans = [[int(f.df["timestamp"].min()) for f in frames], [int(f.df["timestamp"].max()) for f in frames]]
    with connection.cursor() as cur:
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (k int4, ts bigint, open float8, high float8, low float8, "
            f"close float8, volume float8) ON COMMIT DROP"
        )
        cur.execute(f"TRUNCATE {_STAGE}")
        cur.copy_expert(f"COPY {_STAGE} FROM STDIN WITH (FORMAT binary)",
                        io.BytesIO(candles_copy_buffer([f.df for f in frames])))
        cur.execute(_ANY_STORED_SQL, [*columns, *spans])
        if not cur.fetchone()[0]:
            # Nothing stored in the frames' ranges: a plain INSERT (no speculative insertion, no RETURNING). A
            # concurrent writer outside ingest_candles would make it fail on the unique key: fall back to the upsert.
            try:
                with transaction.atomic():
                    cur.execute(_INSERT_SQL[one], keys)
                return {f.key: UpsertResult(inserted=np.sort(f.df["timestamp"].to_numpy(dtype=np.int64)).tolist())
                        for f in frames}
            except IntegrityError:
                pass
        cur.execute(_UPSERT_SQL[one], keys)
        returned = {(e, s, t): (ins, upd) for e, s, t, ins, upd in cur.fetchall()}
    out = {}
    for f in frames:
        inserted_text, updated_text = returned.get(f.key, ("", ""))
        inserted = np.array(inserted_text.split(","), dtype=np.int64).tolist() if inserted_text else []
        changed = np.array(updated_text.split(","), dtype=np.int64).tolist() if updated_text else []
        out[f.key] = UpsertResult(inserted=inserted, updated=len(changed),
                                  unchanged=len(f.df) - len(inserted) - len(changed), updated_timestamps=changed)
    return out


_COLS = ", ".join(PRICE_FIELDS)
# The stage's k-th frame belongs to the k-th (exchange, symbol, timeframe) of the three text[] parameters, or, with
# one frame, to the three constants.
_SOURCE = {False: f"(%s::text[])[k], (%s::text[])[k], (%s::text[])[k], ts, {_COLS} FROM {_STAGE}",
           True: f"%s, %s, %s, ts, {_COLS} FROM {_STAGE}"}
_ANY_STORED_SQL = """
    SELECT EXISTS (
        SELECT 1 FROM unnest(%s::text[], %s::text[], %s::text[], %s::int8[], %s::int8[]) AS f(e, s, t, lo, hi)
        JOIN market_data m ON m.exchange = f.e AND m.symbol = f.s AND m.timeframe = f.t
                          AND m.timestamp BETWEEN f.lo AND f.hi
    )
"""
_INSERT_SQL = {one: f"INSERT INTO market_data (exchange, symbol, timeframe, timestamp, {_COLS}) SELECT {source}"
               for one, source in _SOURCE.items()}
_UPSERT_SQL = {one: f"""
    WITH up AS (
        INSERT INTO market_data (exchange, symbol, timeframe, timestamp, {_COLS})
        SELECT {source}
        ON CONFLICT (exchange, symbol, timeframe, timestamp) DO UPDATE
        SET {", ".join(f"{c} = EXCLUDED.{c}" for c in PRICE_FIELDS)}
        WHERE ({", ".join(f"market_data.{c}" for c in PRICE_FIELDS)})
              IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in PRICE_FIELDS)})
        RETURNING exchange, symbol, timeframe, timestamp, (xmax = 0) AS inserted
    )
    SELECT exchange, symbol, timeframe,
           coalesce(string_agg(timestamp::text, ',' ORDER BY timestamp) FILTER (WHERE inserted), ''),
           coalesce(string_agg(timestamp::text, ',' ORDER BY timestamp) FILTER (WHERE NOT inserted), '')
    FROM up GROUP BY exchange, symbol, timeframe
""" for one, source in _SOURCE.items()}


def _upsert_candles_generic(exchange: str, symbol: str, timeframe: str, df: pd.DataFrame) -> UpsertResult:
    ts = df["timestamp"].to_numpy(dtype=np.int64)
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT timestamp, {', '.join(PRICE_FIELDS)} FROM market_data "
            "WHERE exchange = %s AND symbol = %s AND timeframe = %s AND timestamp BETWEEN %s AND %s",
            [exchange, symbol, timeframe, int(ts.min()), int(ts.max())],
        )
        stored = cur.fetchall()
    existing = pd.DataFrame(stored, columns=["timestamp", *PRICE_FIELDS]).astype(
        {"timestamp": np.int64, **{c: np.float64 for c in PRICE_FIELDS}}
    )
    merged = df[["timestamp", *PRICE_FIELDS]].merge(existing, on="timestamp", how="left", suffixes=("", "_old"),
                                                    indicator=True)
    is_new = (merged["_merge"] == "left_only").to_numpy()
    differs = np.zeros(len(merged), dtype=bool)
    for c in PRICE_FIELDS:
        differs |= merged[c].to_numpy() != merged[f"{c}_old"].to_numpy()
    changed = ~is_new & differs
    write = merged.loc[is_new | changed]
    if len(write):
        sets = ", ".join(f"{c} = excluded.{c}" for c in PRICE_FIELDS)
        sql = (
            f"INSERT INTO market_data (exchange, symbol, timeframe, timestamp, {', '.join(PRICE_FIELDS)}) "
            f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            f"ON CONFLICT (exchange, symbol, timeframe, timestamp) DO UPDATE SET {sets}"
        )
        arrays = [write[c].to_numpy().tolist() for c in ("timestamp", *PRICE_FIELDS)]
        params = [(exchange, symbol, timeframe, *row) for row in zip(*arrays, strict=True)]
        with connection.cursor() as cur:
            cur.executemany(sql, params)
    inserted = np.sort(merged.loc[is_new, "timestamp"].to_numpy(dtype=np.int64)).tolist()
    updated = np.sort(merged.loc[changed, "timestamp"].to_numpy(dtype=np.int64)).tolist()
    return UpsertResult(inserted=inserted, updated=len(updated), unchanged=int((~is_new & ~differs).sum()),
                        updated_timestamps=updated)


@dataclass(frozen=True)
class TradeFrame:
    """One market's trades (timestamp, price, amount, side, trade_id): as received for services.ingest_trades_many,
    validated for insert_trades_many."""

    exchange: str
    symbol: str
    df: pd.DataFrame

    @property
    def key(self) -> tuple[str, str]:
        return self.exchange, self.symbol


def insert_trades(*, exchange: str, symbol: str, df: pd.DataFrame) -> int:
    """Insert a validated trades frame into raw_trades, skipping trades already stored (same exchange, symbol,
    trade_id, timestamp). Returns the number of rows inserted."""
    return insert_trades_many([TradeFrame(exchange, symbol, df)])[0]


def insert_trades_many(frames: list[TradeFrame]) -> list[int]:
    """insert_trades of several markets at once (one COPY, one INSERT on PostgreSQL: a stream process stores every
    market's raw trades together), the count inserted per frame. One frame per market."""
    keys = [f.key for f in frames]
    if len(set(keys)) != len(keys):
        raise ValueError("insert_trades_many: one frame per market")
    todo = [f for f in frames if len(f.df)]
    if not todo:
        return [0 for _ in frames]
    with transaction.atomic():
        if connection.vendor == "postgresql":
            done = _insert_trades_pg(todo)
        else:
            done = {f.key: _insert_trades_generic(f.exchange, f.symbol, _trade_columns(f.df)) for f in todo}
    return [done.get(k, 0) for k in keys]


def _trade_columns(df: pd.DataFrame, k: int | None = None) -> pd.DataFrame:
    columns = {
        "trade_id": df["trade_id"].astype(str).to_numpy(dtype=object),
        "timestamp": df["timestamp"].to_numpy(dtype=np.int64),
        "price": df["price"].to_numpy(dtype=np.float64),
        "amount": df["amount"].to_numpy(dtype=np.float64),
        "side": df["side"].astype(str).to_numpy(dtype=object),
    }
    return pd.DataFrame(columns if k is None else {"k": np.full(len(df), k, dtype=np.int32), **columns})


def _insert_trades_pg(frames: list[TradeFrame]) -> dict[tuple[str, str], int]:
    buf = io.StringIO()
    # repr-exact floats: pandas writes the shortest round-trip representation.
    frame = pd.concat([_trade_columns(f.df, k) for k, f in enumerate(frames, start=1)], ignore_index=True)
    frame.to_csv(buf, index=False, header=False)
    buf.seek(0)
    one = len(frames) == 1  # an import's millions of rows: the key as constants, the row count, no RETURNING
    keys = list(frames[0].key) if one else [[f.exchange for f in frames], [f.symbol for f in frames]]
    insert = f"""
        INSERT INTO raw_trades (exchange, symbol, trade_id, timestamp, price, amount, side)
        SELECT {"%s, %s" if one else "(%s::text[])[k], (%s::text[])[k]"}, trade_id, ts, price, amount,
               coalesce(side, '') FROM {_TRADE_STAGE}
        ON CONFLICT (exchange, symbol, trade_id, timestamp) DO NOTHING"""
    with connection.cursor() as cur:
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_TRADE_STAGE} (k int4, trade_id text, ts bigint, price float8, "
            f"amount float8, side text) ON COMMIT DROP"
        )
        cur.execute(f"TRUNCATE {_TRADE_STAGE}")
        cur.copy_expert(f"COPY {_TRADE_STAGE} FROM STDIN WITH (FORMAT csv)", buf)
        if one:
            cur.execute(insert, keys)
            return {frames[0].key: max(cur.rowcount, 0)}
        cur.execute(f"WITH ins AS ({insert} RETURNING exchange, symbol) "
                    "SELECT exchange, symbol, count(*) FROM ins GROUP BY exchange, symbol", keys)
        return {(e, s): int(n) for e, s, n in cur.fetchall()}


def _insert_trades_generic(exchange: str, symbol: str, frame: pd.DataFrame) -> int:
    sql = (
        "INSERT INTO raw_trades (exchange, symbol, trade_id, timestamp, price, amount, side) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (exchange, symbol, trade_id, timestamp) DO NOTHING"
    )
    arrays = [frame[c].to_numpy().tolist() for c in ("trade_id", "timestamp", "price", "amount", "side")]
    params = [(exchange, symbol, *row) for row in zip(*arrays, strict=True)]
    with connection.cursor() as cur:
        before = _count_trades(cur, exchange, symbol)
        cur.executemany(sql, params)
        return _count_trades(cur, exchange, symbol) - before


def _count_trades(cur, exchange: str, symbol: str) -> int:
    cur.execute("SELECT count(*) FROM raw_trades WHERE exchange = %s AND symbol = %s", [exchange, symbol])
    return int(cur.fetchone()[0])
