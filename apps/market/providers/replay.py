"""Stored history re-emitted as a live feed, so collect -> publish -> bot tick runs offline and reproducibly.

`ReplayProvider(source="binance")` reads candles stored for exchange `source`. As a provider (Market.provider
"replay") each collection round serves the candles after the target market's newest one: `step` of them per round
(None = all; default settings.TRADEBOT_REPLAY_STEP when defined, so a beat round per minute replays 1m data live).
`feed()` yields one closed candle at a time, paced at `speed` x real time (speed=60: a 1m candle every second; None:
as fast as possible); `replay_into()` ingests that feed into another exchange name (default "replay"), publishing each
candle like the live collector does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd

from apps.market.providers.base import ProviderError, empty_trades_frame, paginate
from apps.market.timeframes import timeframe_ms

DEFAULT_SOURCE = "binance"
DEFAULT_TARGET = "replay"


def _setting(name: str, default):
    from django.conf import settings

    return getattr(settings, name, default)


class ReplayProvider:
    name = "replay"

    def __init__(
        self,
        source: str | None = None,
        *,
        exchange: str | None = None,
        speed: float | None = None,
        sleep: Callable[[float], None] | None = None,
        step: int | None = None,
        limit: int | None = None,
    ) -> None:
        self.source = source or _setting("TRADEBOT_REPLAY_SOURCE", DEFAULT_SOURCE)
        self.exchange = exchange or DEFAULT_TARGET  # the name the replayed candles are stored under
        if self.source == self.exchange:
            raise ProviderError(f"replay source and target are both {self.source!r}: replay into another exchange name")
        if speed is not None and speed <= 0:
            raise ProviderError(f"replay speed must be > 0 (x real time) or None (as fast as possible), got {speed}")
        step = step if step is not None else _setting("TRADEBOT_REPLAY_STEP", None)
        if step is not None and step < 1:
            raise ProviderError(f"replay step must be >= 1 candle per round or None, got {step}")
        self.speed = speed
        self.sleep = sleep or time.sleep
        self.step = step
        self.limit = int(limit or _setting("TRADEBOT_FETCH_LIMIT", 1000))

    def _stored(self, symbol: str, timeframe: str, since: int | None, until: int | None) -> pd.DataFrame:
        from apps.market.selectors import candle_frame

        timeframe_ms(timeframe)
        start = None if since is None else since + 1  # selectors bounds are inclusive; provider `since` is exclusive
        df = candle_frame(exchange=self.source, symbol=symbol, timeframe=timeframe, start=start, end=until)
        if self.step is not None:
            df = df.iloc[: self.step].reset_index(drop=True)
        return df

    def fetch_candles(
        self, symbol: str, timeframe: str, since: int | None = None, until: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """Pages of the source's stored candles with since < close <= until (`step` caps the total per call)."""
        yield from paginate(self._stored(symbol, timeframe, since, until), self.limit)

    def feed(
        self, symbol: str, timeframe: str, since: int | None = None, until: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """One-row candle frames in close-time order, sleeping (gap to the previous candle) / speed between them."""
        previous: int | None = None
        for page in self.fetch_candles(symbol, timeframe, since, until):
            for i in range(len(page)):
                row = page.iloc[i : i + 1].reset_index(drop=True)
                ts = int(row["timestamp"].iat[0])
                if self.speed is not None and previous is not None:
                    self.sleep((ts - previous) / 1000.0 / self.speed)
                previous = ts
                yield row

    def fetch_trades(self, symbol: str, since: int | None = None, limit: int | None = None) -> pd.DataFrame:
        """Replay serves candles only; raw trades are not replayed."""
        return empty_trades_frame()


@dataclass
class ReplayReport:
    emitted: int = 0
    stored: int = 0
    rejected: int = 0
    first: int | None = None
    last: int | None = None


def replay_into(
    symbol: str,
    timeframe: str,
    *,
    source: str = DEFAULT_SOURCE,
    target: str = DEFAULT_TARGET,
    since: int | None = None,
    until: int | None = None,
    speed: float | None = None,
    sleep: Callable[[float], None] | None = None,
    publish: bool = True,
) -> ReplayReport:
    """Re-ingest `source`'s stored candles as market (target, symbol, timeframe), one closed candle at a time.

    Each candle is its own ingest (validate, upsert, ledger, publish on commit), exactly like a live collection round,
    so subscribers and bot ticks see the replay as a live market. Idempotent: a rerun stores nothing new.
    """
    from apps.market.services import ingest_candles

    provider = ReplayProvider(source, exchange=target, speed=speed, sleep=sleep)
    report = ReplayReport()
    for row in provider.feed(symbol, timeframe, since, until):
        result = ingest_candles(exchange=target, symbol=symbol, timeframe=timeframe, df=row, publish=publish)
        report.emitted += 1
        report.stored += len(result.new_timestamps)
        report.rejected += len(result.rejected)
        ts = int(row["timestamp"].iat[0])
        report.first = ts if report.first is None else report.first
        report.last = ts
    return report
