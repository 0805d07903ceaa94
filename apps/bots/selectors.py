"""Reads of the bots app (status views for commands and pages)."""

from __future__ import annotations

from typing import Any

from django.db.models import Max
from django.utils import timezone

from apps.bots.models import Bot, Signal
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
