"""factory_boy factories for the suite: markets, candles, bots, backtest runs and sweeps.

Rows with a service build through it, so a factory object is what the application would have made: `BotFactory` calls
`bots.services.bot_create` (validated by THE bot config schema, cash = initial balance), `MarketFactory` the market
service's validator, `BacktestRunFactory` / `SweepFactory` `backtest.services.create_run` / `create_sweep` (not
enqueued unless `enqueue=True`). Synthetic candles (`CandleFactory`) are consistent and on the 1m grid; where a test
needs a real series, `store_sample_candles` ingests the recorded Binance 2023 sample (sample_data/binance_spot_2023,
see its README for provenance) through `market.services.ingest_candles`; the --detail tests' real data (BTC/USDT 1h
with its 1m candles, XRP/ETH raw trades with their 5m candles) through `store_btc_1h_with_1m` /
`store_xrp_trades_with_5m`.
"""

from __future__ import annotations

from pathlib import Path

import factory
import pandas as pd

from apps.backtest import services as backtest_services
from apps.backtest.models import BacktestRun, Sweep
from apps.bots import services as bot_services
from apps.bots.models import Bot
from apps.market import services as market_services
from apps.market.csvio import read_candle_csv
from apps.market.models import Candle, Market

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data" / "binance_spot_2023"
XRP_DIR = SAMPLE_DIR.parent / "freqtrade_xrp_eth"
BASE_CLOSE_MS = 1_679_004_960_000  # 2023-03-16 22:16 UTC, the first close time of the Binance 1m sample
TIMEFRAME_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000}


def sample_candles(symbol: str = "BTC/USDT", timeframe: str = "1h", nrows: int | None = None) -> pd.DataFrame:
    """The recorded Binance sample as a close-labelled candle frame (the files are labelled by open time)."""
    base, quote = symbol.split("/")
    name = f"binance_{base}_{quote}-{timeframe}.csv"
    path = SAMPLE_DIR / name if (SAMPLE_DIR / name).exists() else SAMPLE_DIR / f"{name}.gz"
    df = pd.read_csv(path, nrows=nrows)
    df["timestamp"] = df["timestamp"].astype("int64") + TIMEFRAME_MS[timeframe]
    return df[["timestamp", "open", "high", "low", "close", "volume"]].reset_index(drop=True)


def store_sample_candles(*, exchange: str = "binance", symbol: str = "BTC/USDT", timeframe: str = "1h",
                         nrows: int | None = None) -> pd.DataFrame:
    """Ingest the real sample (validated, upserted, ledgered; not published) and return the frame stored."""
    df = sample_candles(symbol, timeframe, nrows)
    market_services.ingest_candles(exchange=exchange, symbol=symbol, timeframe=timeframe, df=df, publish=False)
    return df


def store_btc_1h_with_1m() -> pd.DataFrame:
    """The --detail 1m tests' data: the real Binance BTC/USDT 1h candles and the 1m candles of the same weeks,
    ingested (not published); returns the 1h frame."""
    h1 = read_candle_csv(SAMPLE_DIR / "binance_BTC_USDT-1h.csv", timeframe="1h", time_label="open")
    m1 = read_candle_csv(SAMPLE_DIR / "binance_BTC_USDT-1m.csv.gz", timeframe="1m", time_label="open")
    market_services.ingest_candles(exchange="binance", symbol="BTC/USDT", timeframe="1h", df=h1, publish=False)
    market_services.ingest_candles(exchange="binance", symbol="BTC/USDT", timeframe="1m", df=m1, publish=False)
    return h1


def store_xrp_trades_with_5m() -> pd.DataFrame:
    """The --detail trades tests' data: real Binance XRP/ETH raw trades and the 5m candles derived from them,
    ingested; returns the trades."""
    trades = pd.read_csv(XRP_DIR / "binance_XRP_ETH-trades.csv.gz")
    trades = trades.rename(columns={"id": "trade_id"})[["timestamp", "price", "amount", "side", "trade_id"]]
    market_services.ingest_trades(exchange="binance", symbol="XRP/ETH", df=trades)
    m5 = read_candle_csv(XRP_DIR / "freqtrade_XRP_ETH-5m_derived_from_trades.csv", timeframe="5m", time_label="open")
    market_services.ingest_candles(exchange="binance", symbol="XRP/ETH", timeframe="5m", df=m5, publish=False)
    return trades


class MarketFactory(factory.django.DjangoModelFactory):
    """A Market row; `watched=True` goes through market_watch. Validated unless the provider is a test double."""

    class Meta:
        model = Market
        django_get_or_create = ("exchange", "symbol", "timeframe")

    exchange = "binance"
    symbol = "BTC/USDT"
    timeframe = "1m"
    provider = "ccxt"
    watched = False

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        if kwargs.get("provider") in ("ccxt", "replay"):
            market_services.validate_market(**{k: kwargs[k] for k in ("exchange", "symbol", "timeframe",
                                                                       "provider")})
        return super()._create(model_class, *args, **kwargs)


class CandleFactory(factory.django.DjangoModelFactory):
    """A synthetic, consistent 1m candle (low <= open, close <= high) on the grid, one minute after the previous."""

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


class BotFactory(factory.Factory):
    """A stopped bot made by bots.services.bot_create (pass `status="running"` to start it with bot_start)."""

    class Meta:
        model = Bot

    name = factory.Sequence(lambda n: f"bot-{n}")
    strategy = "sma_cross"
    parameters = factory.LazyFunction(lambda: {"fast": 10, "slow": 50})
    exchange = "binance"
    symbol = "BTC/USDT"
    timeframe = "1m"
    initial_balance = 10_000.0

    @classmethod
    def _create(cls, model_class, *args, status: str = Bot.Status.STOPPED, config_file: str = "", **kwargs):
        bot = bot_services.bot_create(data=kwargs, config_file=config_file)
        if status == Bot.Status.RUNNING:
            bot_services.bot_start(bot=bot)
        return bot

    @classmethod
    def _build(cls, model_class, *args, **kwargs):
        kwargs.pop("status", None)
        return model_class(*args, **kwargs)


class BacktestRunFactory(factory.Factory):
    """A pending run made by backtest.services.create_run (validated; enqueued on commit only with enqueue=True)."""

    class Meta:
        model = BacktestRun

    strategy = "sma_cross"
    parameters = factory.LazyFunction(lambda: {"fast": 10, "slow": 40})
    exchange = "binance"
    symbol = "BTC/USDT"
    timeframe = "1h"
    enqueue = False

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return backtest_services.create_run(**kwargs)


class SweepFactory(factory.Factory):
    """A sweep made by backtest.services.create_sweep over a small grid (dispatched only with enqueue=True)."""

    class Meta:
        model = Sweep

    strategy = "sma_cross"
    grid = factory.LazyFunction(lambda: {"fast": [5, 10], "slow": [40, 80]})
    exchange = "binance"
    symbol = "BTC/USDT"
    timeframe = "1h"
    metric = "sharpe"
    top_k = 3
    chunk_size = 2
    enqueue = False

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return backtest_services.create_sweep(**kwargs)
