"""manage.py bots_from_study STUDY_ID --top K [--start]: a study's K best trials become paper bots."""

from __future__ import annotations

from apps.backtest.management.cli import BotsFromResearchCommand


class Command(BotsFromResearchCommand):
    help = "Create (or update) paper bots from an optimize study's best trials on its market; --start starts them."
    id_argument = "study_id"
    top_help = "How many of the best trials"

    def make_bots(self, pk: int, *, top: int, start: bool) -> list:
        from apps.backtest.optimize import bots_from_study

        return bots_from_study(study_id=pk, top=top, start=start)
