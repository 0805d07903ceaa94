"""A sweep's best parameter sets become paper bots on its market in one step."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.backtest.models import Sweep, SweepResult
from apps.bots.models import Bot

pytestmark = pytest.mark.django_db(transaction=True)


def test_given_a_finished_sweep_when_bots_are_made_from_its_top_two_then_they_carry_its_best_parameters():
    sweep = Sweep.objects.create(strategy="sma_cross", exchange="binance", symbol="BTC/USDT", timeframe="1h",
                                 metric="sharpe", status="done", fee=0.002, stop_loss=0.05)
    for i, (fast, slow, sharpe) in enumerate([(5, 20, 0.5), (10, 50, 1.5), (8, 30, 1.0), (3, 12, None)]):
        SweepResult.objects.create(sweep=sweep, index=i, parameters={"fast": fast, "slow": slow},
                                   metrics={"sharpe": sharpe}, error="" if sharpe is not None else "boom")
    out = StringIO()

    call_command("bots_from_sweep", str(sweep.pk), "--top", "2", stdout=out)

    bots = list(Bot.objects.order_by("name"))
    assert [b.name for b in bots] == [f"sweep{sweep.pk}-1-fast10-slow50", f"sweep{sweep.pk}-2-fast8-slow30"]
    assert bots[0].parameters == {"fast": 10, "slow": 50} and bots[0].fee_rate == 0.002
    assert bots[0].stop_loss == 0.05 and bots[0].status == "stopped"
    with pytest.raises(CommandError, match="no sweep #999999"):
        call_command("bots_from_sweep", "999999", "--top", "2")
