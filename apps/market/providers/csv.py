"""Candle / trade files as a provider (import and offline demos). The time label of a file is REQUIRED, never guessed.

`path` is one file, or a directory searched for `*{BASE}_{QUOTE}-{tf}.csv[.gz]` (the sample_data naming, e.g.
binance_BTC_USDT-1m.csv.gz; a file prefixed with the exchange id wins) and `*{BASE}_{QUOTE}-trades.csv[.gz]`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from apps.market.providers.base import ProviderError, paginate, window
from apps.market.timeframes import now_ms, timeframe_ms

DEFAULT_PAGE = 1000


class CsvProvider:
    name = "csv"

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        time_label: str | None = None,
        exchange: str | None = None,
        trades_path: str | Path | None = None,
        limit: int | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        if path is None:
            raise ProviderError("csv provider needs `path` (a candle file or a directory of files)")
        if time_label not in ("open", "close"):
            raise ProviderError(
                f"csv provider needs time_label 'open' or 'close' (got {time_label!r}): a file does not say which "
                "label it uses and a wrong guess shifts every candle by one timeframe"
            )
        self.path = Path(path)
        if not self.path.exists():
            raise ProviderError(f"csv provider: {self.path} does not exist")
        self.time_label = time_label
        self.exchange = exchange
        self.trades_path = Path(trades_path) if trades_path else None
        self.limit = int(limit or DEFAULT_PAGE)
        self.clock = clock or now_ms

    def _find(self, symbol: str, suffix: str) -> Path:
        if self.path.is_file():
            return self.path
        stem = symbol.replace("/", "_").replace(":", "_")
        matches = sorted(p for p in self.path.glob(f"*{stem}-{suffix}.csv*") if p.name.endswith((".csv", ".csv.gz")))
        if self.exchange:
            preferred = [p for p in matches if p.name.startswith(f"{self.exchange}_")]
            matches = preferred or matches
        if not matches:
            raise ProviderError(
                f"csv provider: no file for {symbol} {suffix} in {self.path} (looked for *{stem}-{suffix}.csv[.gz])"
            )
        return matches[0]

    def candle_file(self, symbol: str, timeframe: str) -> Path:
        timeframe_ms(timeframe)  # unknown timeframe -> TimeframeError before touching files
        return self._find(symbol, timeframe)

    def fetch_candles(
        self, symbol: str, timeframe: str, since: int | None = None, until: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """Pages of the file's candles (close labels) with since < close <= until, closed by now, ascending."""
        from apps.market.csvio import read_candle_csv

        df = read_candle_csv(self.candle_file(symbol, timeframe), timeframe=timeframe, time_label=self.time_label)
        df = df.sort_values("timestamp", kind="stable").reset_index(drop=True)
        now = int(self.clock())
        until = now if until is None else min(until, now)
        yield from paginate(window(df, since, until), self.limit)

    def fetch_trades(self, symbol: str, since: int | None = None, limit: int | None = None) -> pd.DataFrame:
        from apps.market.csvio import read_trades_csv

        df = read_trades_csv(self.trades_path or self._find(symbol, "trades"))
        df = df.sort_values("timestamp", kind="stable").reset_index(drop=True)
        if since is not None:
            df = df.loc[df["timestamp"] >= since].reset_index(drop=True)
        if limit is not None:
            df = df.iloc[:limit].reset_index(drop=True)
        return df
