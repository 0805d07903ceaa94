"""manage.py bots_from_sweep SWEEP_ID --top K [--start]: the sweep's K best parameter sets become paper bots."""

from __future__ import annotations

from apps.backtest.management.cli import BotsFromResearchCommand


class Command(BotsFromResearchCommand):
    help = "Create (or update) paper bots from a sweep's best parameter sets on its market; --start starts them."
    id_argument = "sweep_id"
    top_help = "How many of the best parameter sets"

    def make_bots(self, pk: int, *, top: int, start: bool) -> list:
        from apps.backtest.services import bots_from_sweep

        return bots_from_sweep(sweep_id=pk, top=top, start=start)
