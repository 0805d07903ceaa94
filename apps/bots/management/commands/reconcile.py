"""manage.py reconcile NAME [--start ms] [--end ms] [--json]: a bot's records against a backtest of its config.

The twin backtest runs the bot's strategy and fill rules over the same stored candles (from the bot's history start,
so its indicators start where the bot's did), trading from the bot's first decided candle. The first candle where
the bot's signal, fill, fill price, amount or fee differs is named; exit 0 when they match, 1 on a divergence.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from apps.common.management import DomainCommand, usage_error
from apps.market.timeframes import format_ms, parse_time


class Command(DomainCommand):
    help = "Compare a bot's recorded signals and trades with a backtest of its config; exit 1 on a divergence."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Bot name")
        parser.add_argument("--start", help="First candle to compare (ms UTC or ISO date)")
        parser.add_argument("--end", help="Last candle to compare (ms UTC or ISO date)")
        parser.add_argument("--json", action="store_true", help="Print ONE JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        from apps.bots.models import Bot, Signal
        from apps.bots.selectors import live_detail
        from apps.bots.services import rules_for
        from apps.bots.strategies.registry import create_strategy
        from apps.bots.trading.candles import CandleArrays
        from apps.bots.trading.fleet import first_divergence, strategy_actions, twin_fills
        from apps.market.selectors import candle_frame

        try:
            bot = Bot.objects.get(name=options["name"])
        except Bot.DoesNotExist:
            raise usage_error(f"unknown bot {options['name']!r}") from None
        try:
            start = parse_time(str(options["start"])) if options.get("start") else None
            end = parse_time(str(options["end"])) if options.get("end") else None
        except ValueError as exc:
            raise usage_error(str(exc)) from None
        signals = dict(Signal.objects.filter(bot=bot).values_list("timestamp", "action"))
        if not signals:
            raise CommandError(f"{bot.name}: nothing decided yet, nothing to reconcile", returncode=1)
        trading_from = min(signals)
        last = max(signals) if end is None else min(end, max(signals))
        candles = CandleArrays.from_frame(candle_frame(exchange=bot.exchange, symbol=bot.symbol,
                                                       timeframe=bot.timeframe, start=bot.history_start, end=last))
        strategy = create_strategy(bot.strategy, bot.parameters)
        actions = strategy_actions(candles, strategy)
        rules = rules_for(bot)
        detail = live_detail(exchange=bot.exchange, symbol=bot.symbol, timeframe=bot.timeframe,
                             candle_ts=candles.timestamp, rules=[rules])  # the rule the live ticks used
        twin = twin_fills(candles, strategy, rules, trading_from=trading_from, signals=actions, detail=detail)
        recorded = [{"timestamp": t, "side": s, "price": p, "amount": a, "fee": f}
                    for t, s, p, a, f in bot.trades.filter(timestamp__lte=last).order_by("timestamp", "side")
                    .values_list("timestamp", "side", "price", "amount", "fee")]
        diverged = first_divergence(candles, actions, trading_from, signals, recorded, twin, start=start, end=last)
        compared = sum(1 for t in signals if (start is None or t >= start) and t <= last)
        payload = {"bot": bot.name, "match": diverged is None, "candles": compared, "divergence": diverged,
                   "bot_fills": len(recorded), "backtest_fills": len([f for f in twin if f["timestamp"] <= last])}
        if options["json"]:
            self.stdout.write(json.dumps(payload))
        elif diverged is None:
            self.stdout.write(f"{bot.name}: match over {compared} candles ({len(recorded)} fills)")
        else:
            self.stdout.write(f"{bot.name}: diverges at {diverged['timestamp']} ({format_ms(diverged['timestamp'])}):"
                              f" {diverged['what']} bot={diverged['bot']!r} backtest={diverged['backtest']!r}")
        if diverged is not None:
            raise SystemExit(1)
