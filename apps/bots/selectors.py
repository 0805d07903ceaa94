"""Reads of the bots app: status views for commands and pages, profit summaries (freqtrade's /profit and
/performance) and the fleet overview."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from django.db import connection
from django.db.models import CharField, Count, F, FloatField, Max, Min, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.bots.models import Bot, BotPerformance, Signal, Trade
from apps.market.timeframes import format_ms

HOUR_MS = 3_600_000


def bot_status_rows(bots: list[Bot]) -> list[dict[str, Any]]:
    """Status, last decided candle, heartbeat age, equity (marked at the market's newest close), open position,
    restarts in the last hour and last error of each bot: one query for the decided candles, one per market."""
    from apps.market.models import Candle

    ids = [b.pk for b in bots]
    decided = dict(Signal.objects.filter(bot_id__in=ids).values("bot_id").annotate(m=Max("timestamp"))
                   .values_list("bot_id", "m"))
    closes: dict[tuple, float | None] = {}
    now = timezone.now()
    now_ms = int(now.timestamp() * 1000)
    rows = []
    for bot in bots:
        key = (bot.exchange, bot.symbol, bot.timeframe)
        if key not in closes:
            last = Candle.objects.filter(exchange=bot.exchange, symbol=bot.symbol, timeframe=bot.timeframe) \
                .order_by("-timestamp").values_list("close", flat=True).first()
            closes[key] = None if last is None else float(last)
        close = closes[key]
        last_decided = decided.get(bot.pk)
        rows.append({
            "name": bot.name, "id": bot.pk, "status": bot.status, "strategy": bot.strategy,
            "parameters": bot.parameters, "market": f"{bot.exchange} {bot.symbol} {bot.timeframe}",
            "last_decided": last_decided, "last_decided_iso": format_ms(last_decided) if last_decided else None,
            "heartbeat_age_s": None if bot.heartbeat_at is None else (now - bot.heartbeat_at).total_seconds(),
            "equity": None if close is None else bot.cash + bot.position * close,
            "cash": bot.cash, "position": bot.position, "entry_price": bot.entry_price or 0.0,
            "restarts_last_hour": sum(1 for t in bot.restart_times if now_ms - int(t) < HOUR_MS),
            "last_error": bot.last_error,
        })
    return rows


def _trade_stats(trades: QuerySet) -> dict[str, Any]:
    sells = Q(side=Trade.Side.SELL)
    agg = trades.aggregate(
        trade_count=Count("id"),
        closed_trade_count=Count("id", filter=sells),
        winning_trades=Count("id", filter=sells & Q(realized_pnl__gt=0)),
        losing_trades=Count("id", filter=sells & Q(realized_pnl__lte=0)),
        profit_closed=Coalesce(Sum("realized_pnl", filter=sells), 0.0, output_field=FloatField()),
        gross_profit=Coalesce(Sum("realized_pnl", filter=sells & Q(realized_pnl__gt=0)), 0.0,
                              output_field=FloatField()),
        gross_loss=Coalesce(Sum("realized_pnl", filter=sells & Q(realized_pnl__lt=0)), 0.0,
                            output_field=FloatField()),
        fees=Coalesce(Sum("fee"), 0.0, output_field=FloatField()),
        first_trade_timestamp=Min("timestamp"),
        latest_trade_timestamp=Max("timestamp"),
    )
    closed = agg["closed_trade_count"]
    agg["winrate"] = agg["winning_trades"] / closed if closed else None
    agg["profit_factor"] = agg["gross_profit"] / -agg["gross_loss"] if agg["gross_loss"] < 0 else None
    return agg


def latest_performance(bot: Bot) -> BotPerformance | None:
    return bot.performance.order_by("-timestamp").first()


def bot_equity(bot: Bot) -> float:
    """Cash plus the position valued at the last processed candle's close (the latest snapshot)."""
    snap = latest_performance(bot)
    return float(snap.equity) if snap is not None else float(bot.cash)


def bot_profit(bot: Bot) -> dict[str, Any]:
    stats = _trade_stats(Trade.objects.filter(bot=bot))
    equity = bot_equity(bot)
    max_dd = bot.performance.aggregate(m=Max("drawdown"))["m"]
    return {
        "bot_id": bot.pk,
        "name": bot.name,
        "initial_balance": bot.initial_balance,
        "equity": equity,
        "profit_all": equity - bot.initial_balance,
        "profit_all_pct": (equity / bot.initial_balance - 1.0) * 100.0,
        "profit_closed_pct": stats["profit_closed"] / bot.initial_balance * 100.0,
        "open_position": bot.position,
        "max_drawdown": float(max_dd or 0.0),
        **stats,
    }


def fleet_profit() -> dict[str, Any]:
    """The freqtrade `/profit` view over every bot: totals over all trades, equity summed over bots."""
    stats = _trade_stats(Trade.objects.all())
    bots = Bot.objects.aggregate(n=Count("id"), initial=Coalesce(Sum("initial_balance"), 0.0,
                                                                  output_field=FloatField()),
                                 running=Count("id", filter=Q(status=Bot.Status.RUNNING)))
    equity = sum(float(e) for e in with_equity(Bot.objects.all()).values_list("equity_now", flat=True))
    initial = float(bots["initial"])
    return {
        "bots": bots["n"],
        "running": bots["running"],
        "initial_balance": initial,
        "equity": equity,
        "profit_all": equity - initial,
        "profit_all_pct": (equity / initial - 1.0) * 100.0 if initial else 0.0,
        **stats,
    }


def performance_by_market() -> list[dict[str, Any]]:
    """The freqtrade `/performance` view: closed-trade profit per market, best first."""
    rows = (
        Trade.objects.filter(side=Trade.Side.SELL)
        .values(exchange=F("bot__exchange"), symbol=F("bot__symbol"), timeframe=F("bot__timeframe"))
        .annotate(profit=Sum("realized_pnl"), count=Count("id"), bots=Count("bot", distinct=True))
        .order_by("-profit", "exchange", "symbol", "timeframe")
    )
    return [dict(r) for r in rows]


def with_equity(qs: QuerySet) -> QuerySet:
    """Bots annotated with `equity_now` (latest snapshot, else cash) and `drawdown_now`/`max_drawdown`."""
    latest = BotPerformance.objects.filter(bot=OuterRef("pk")).order_by("-timestamp")
    return qs.annotate(
        equity_now=Coalesce(Subquery(latest.values("equity")[:1]), F("cash"), output_field=FloatField()),
        drawdown_now=Coalesce(Subquery(latest.values("drawdown")[:1]), 0.0, output_field=FloatField()),
        max_drawdown=Coalesce(Max("performance__drawdown"), 0.0, output_field=FloatField()),
    )


def stored_detail_source(kind: str, *, exchange: str, symbol: str, candle_ts, timeframe: str):
    """A DetailSource (apps.bots.trading.detail) reading, for the asked candles only, the stored 1m candles or raw
    trades of their intervals: what backtests, sweeps and replays with `--detail` resolve ambiguous exits on."""
    import numpy as np

    from apps.bots.trading.detail import DETAIL_SOURCES, frame_source
    from apps.market.selectors import candles_in_windows, trades_in_windows
    from apps.market.timeframes import timeframe_ms

    if kind not in DETAIL_SOURCES:
        raise ValueError(f"detail must be one of {', '.join(DETAIL_SOURCES)}, got {kind!r}")
    tf = timeframe_ms(timeframe)
    ts = np.asarray(candle_ts, dtype=np.int64)

    def source(bars):
        windows = [(int(ts[b]) - tf, int(ts[b])) for b in bars]
        if kind == "1m":
            df = candles_in_windows(exchange=exchange, symbol=symbol, timeframe="1m", windows=windows)
            cols = tuple(df[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close"))
            return frame_source("1m", df["timestamp"].to_numpy(dtype=np.int64), cols, ts, tf)(bars)
        tts, px = trades_in_windows(exchange=exchange, symbol=symbol, windows=windows)
        return frame_source("trades", tts, (px,), ts, tf)(bars)

    return source


def live_detail(*, exchange: str, symbol: str, timeframe: str, candle_ts, rules: list) -> tuple[str, Any] | None:
    """("trades", DetailSource) when the market's stream stores raw trades and some bot has a stop-loss or take-profit:
    the live tick (and its reconcile twin) then resolve ambiguous candles on the stored trades, as `backtest --detail
    trades` does, so both stay equal. None otherwise (the conservative candle rule; no query when no bot needs it)."""
    from apps.market.models import Market

    if not any(r.stop_loss is not None or r.take_profit is not None for r in rules):
        return None
    if not Market.objects.filter(exchange=exchange, symbol=symbol, store_raw_trades=True).exists():
        return None
    return "trades", stored_detail_source("trades", exchange=exchange, symbol=symbol, candle_ts=candle_ts,
                                          timeframe=timeframe)


def trade_page_json(*, bot_id: int, fields: dict[str, str], limit: int, offset: int) -> tuple[int, bytes] | None:
    """The bot's trade count and one page of its trades, newest first, as a JSON array of objects (`fields` maps each
    key to its column); None if there is no such bot.

    On PostgreSQL it is one query and the database writes the JSON (float8's shortest exact text, the numbers orjson
    would write): building 12,000 Python values per 1,000-row page and formatting them again was most of the list's
    CPU under load (bench/api.py). The page starts at the offset-th (timestamp, id) key found off the index alone, so
    the skipped rows are not read from the table. Elsewhere, plain rows and orjson."""
    if connection.vendor != "postgresql":
        if not Bot.objects.filter(pk=bot_id).exists():
            return None
        qs = Trade.objects.filter(bot_id=bot_id)
        rows = qs.order_by("-timestamp", "-id").values_list(*fields.values())[offset:offset + limit]
        return qs.count(), orjson.dumps([dict(zip(fields, row, strict=True)) for row in rows])
    sql = _trade_page_sql(tuple(fields.items()))
    with connection.cursor() as cur:  # the aggregate takes the page's rows in its order, as in candle_page_json
        cur.execute(sql, [offset, limit, bot_id])
        found = cur.fetchone()
    if found is None:
        return None
    return found[0], f"[{found[1] or ''}]".encode()


@functools.lru_cache(maxsize=8)
def _trade_page_sql(fields: tuple[tuple[str, str], ...]) -> str:
    """trade_page_json's query, built once per field list (not on every request of the hot list)."""
    members = []  # '"key":' || the column's JSON text; keys are serializer field names (plain identifiers)
    for key, column in fields:
        field = next(f for f in Trade._meta.concrete_fields if f.column == column)
        value = f'to_json("{column}")::text' if isinstance(field, CharField) else f'"{column}"::text'
        members.append(f"""'"{key}":' || {f"coalesce({value}, 'null')" if field.null else value}""")
    obj = " || ',' || ".join(members)
    table = Trade._meta.db_table
    return (f"SELECT (SELECT count(*) FROM {table} WHERE bot_id = bot.id), "
            f"(SELECT string_agg('{{' || {obj} || '}}', ',') FROM (SELECT * FROM {table} WHERE bot_id = bot.id "
            f"AND (\"timestamp\", id) <= (SELECT \"timestamp\", id FROM {table} WHERE bot_id = bot.id "
            f"ORDER BY \"timestamp\" DESC, id DESC OFFSET %s LIMIT 1) "
            f"ORDER BY \"timestamp\" DESC, id DESC LIMIT %s) page) "
            f"FROM {Bot._meta.db_table} bot WHERE bot.id = %s")
