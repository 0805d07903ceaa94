"""manage.py bots_from_study STUDY_ID --top K [--start]: a study's K best trials become paper bots."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from apps.common.management import DomainCommand


class Command(DomainCommand):
    help = "Create (or update) paper bots from an optimize study's best trials on its market; --start starts them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study_id", type=int)
        parser.add_argument("--top", type=int, required=True, help="How many of the best trials")
        parser.add_argument("--start", action="store_true", help="Start them (trading from the next closed candle)")

    def handle(self, *args: Any, **options: Any) -> None:
        from apps.backtest.optimize import bots_from_study

        # domain errors (no such study, a file study, no finished trial, a bad parameter): one line, exit 2
        bots = bots_from_study(study_id=options["study_id"], top=options["top"], start=options["start"])
        for bot in bots:
            self.stdout.write(f"{bot.name}: {bot.strategy} {bot.parameters} on {bot.exchange} {bot.symbol} "
                              f"{bot.timeframe}, {bot.status}")
