"""New closed candles -> tick the running bots of that market (enqueued; the sender already runs after commit)."""

from __future__ import annotations

from django.dispatch import receiver

from apps.bots.models import Bot
from apps.market.signals import candles_closed


@receiver(candles_closed, dispatch_uid="bots.tick_on_candles_closed")
def tick_bots_on_new_candles(sender, market, timestamps, **kwargs) -> None:
    running = Bot.objects.filter(exchange=market.exchange, symbol=market.symbol, timeframe=market.timeframe,
                                 status=Bot.Status.RUNNING)
    if timestamps and running.exists():
        from apps.bots.tasks import tick_market_task

        tick_market_task.delay(market.exchange, market.symbol, market.timeframe, max(timestamps))
