"""New closed candles -> tick the running bots of those markets, one task per shard (the sender runs after commit)."""

from __future__ import annotations

from django.dispatch import receiver

from apps.market.signals import candles_closed


@receiver(candles_closed, dispatch_uid="bots.tick_on_candles_closed")
def tick_bots_on_new_candles(sender, closed, **kwargs) -> None:
    markets = [(m.exchange, m.symbol, m.timeframe) for m, timestamps in closed if timestamps]
    if markets:
        from apps.bots import services

        services.enqueue_ticks(markets)
