"""Invariants the database holds for what bots did (apps/bots/models.py)."""

import math

import pytest
from django.db import IntegrityError, transaction

from apps.bots.models import BotPerformance, Trade
from tests.factories import BotFactory

pytestmark = pytest.mark.django_db

TRADE = {"timestamp": 1_700_000_000_000, "side": "buy", "price": 27_000.5, "amount": 0.01, "fee": 0.27,
         "cash_after": 9_729.73, "position_after": 0.01}
SNAPSHOT = {"timestamp": 1_700_000_000_000, "cash": 9_729.73, "position": 0.01, "equity": 9_999.74,
            "realized_pnl": 0.0, "unrealized_pnl": -0.26, "drawdown": 0.0}


@pytest.mark.parametrize("field", ["price", "amount", "fee", "realized_pnl", "cash_after", "position_after"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_given_a_non_finite_trade_value_when_stored_then_the_database_refuses_it(field, value):
    bot = BotFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Trade.objects.create(bot=bot, **{**TRADE, field: value})
    Trade.objects.create(bot=bot, **TRADE)  # the finite trade is stored
    assert Trade.objects.filter(bot=bot).count() == 1


@pytest.mark.parametrize("field", ["cash", "position", "equity", "realized_pnl", "unrealized_pnl"])
def test_given_a_non_finite_snapshot_value_when_stored_then_the_database_refuses_it(field):
    bot = BotFactory()
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(IntegrityError), transaction.atomic():
            BotPerformance.objects.create(bot=bot, **{**SNAPSHOT, field: value})
    BotPerformance.objects.create(bot=bot, **SNAPSHOT)
    assert BotPerformance.objects.filter(bot=bot).count() == 1
