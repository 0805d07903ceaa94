"""manage.py bots_from_sweep SWEEP_ID --top K [--start]: the sweep's K best parameter sets become paper bots."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from apps.common.management import DomainCommand


class Command(DomainCommand):
    help = "Create (or update) paper bots from a sweep's best parameter sets on its market; --start starts them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("sweep_id", type=int)
        parser.add_argument("--top", type=int, required=True, help="How many of the best parameter sets")
        parser.add_argument("--start", action="store_true", help="Start them (trading from the next closed candle)")

    def handle(self, *args: Any, **options: Any) -> None:
        from apps.backtest.services import bots_from_sweep

        # domain errors (no such sweep, a file sweep, no result, a bad parameter): one line, exit 2 (DomainCommand)
        bots = bots_from_sweep(sweep_id=options["sweep_id"], top=options["top"], start=options["start"])
        for bot in bots:
            self.stdout.write(f"{bot.name}: {bot.strategy} {bot.parameters} on {bot.exchange} {bot.symbol} "
                              f"{bot.timeframe}, {bot.status}")
