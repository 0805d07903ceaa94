"""factory_boy factories for market models. Candles are consistent (low <= open, close <= high) and on the 1m grid."""

from __future__ import annotations

import factory

from apps.market.models import Candle, Market

BASE_CLOSE_MS = 1_679_004_960_000  # 2023-03-16 22:16 UTC, the first close time of the Binance sample


class MarketFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Market
        django_get_or_create = ("exchange", "symbol", "timeframe")

    exchange = "binance"
    symbol = "BTC/USDT"
    timeframe = "1m"
    provider = "ccxt"


class CandleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Candle

    exchange = "binance"
    symbol = "BTC/USDT"
    timeframe = "1m"
    timestamp = factory.Sequence(lambda n: BASE_CLOSE_MS + n * 60_000)
    open = factory.Sequence(lambda n: 25_000.0 + n)
    close = factory.LazyAttribute(lambda c: c.open + 5.0)
    high = factory.LazyAttribute(lambda c: max(c.open, c.close) + 10.0)
    low = factory.LazyAttribute(lambda c: min(c.open, c.close) - 10.0)
    volume = 1.5
