"""Any ccxt exchange as a candle/trade provider: paged, rate-limited, retried, only closed candles, close-time labels.

ccxt labels candles by OPEN time and returns the still-forming candle last; we convert (close = open + tf) and keep a
candle only when open + tf <= now. `now`, the sleep used for back-off and the ccxt client are injectable so tests drive
ccxt's own request/parse code with recorded HTTP bodies and never wait.
"""

from __future__ import annotations

import difflib
import functools
import logging
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import ccxt
import numpy as np
import orjson
import pandas as pd

from apps.market.providers.base import ProviderError, candle_frame_from_arrays, empty_trades_frame
from apps.market.timeframes import TIMEFRAMES, timeframe_ms

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_LIMIT = 1000

# One ccxt client per exchange id and process: markets are loaded once, and ccxt's rate limiter (which remembers the
# last request time on the instance) then spaces out every request of this process to that exchange.
# Keyed by the URL overrides too, so a changed TRADEBOT_EXCHANGE_URLS (tests, a mirror) never reuses a stale client.
_CLIENTS: dict[tuple[str, str], ccxt.Exchange] = {}


def _default_limit() -> int:
    try:
        from django.conf import settings

        return int(getattr(settings, "TRADEBOT_FETCH_LIMIT", DEFAULT_LIMIT))
    except Exception:  # noqa: BLE001 - settings not configured (pure use): fall back to the default
        return DEFAULT_LIMIT


def _setting(name: str, default: float) -> float:
    try:
        from django.conf import settings

        value = getattr(settings, name, None)
    except Exception:  # noqa: BLE001 - settings not configured (pure use): the default
        return default
    return default if value is None else float(value)


class GarbledResponse(ccxt.ExchangeNotAvailable):
    """The exchange answered 200 with something that is not what was asked (HTML, truncated JSON, wrong shape). A
    NetworkError: retried with back-off like a 5xx, never parsed into candles."""


def _checked_ohlcv(rows: Any, what: str, client: Any = None) -> list:
    """ccxt turns a non-JSON body into rows of None, and with `since` filters those out into an empty page (which
    reads as "no more candles"): refuse a body that did not parse as JSON, and rows that are not 6+ numbers."""
    body = getattr(client, "last_http_response", None)
    if isinstance(body, str | bytes) and body:
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            raise GarbledResponse(f"{what}: the exchange answered a body that is not JSON: {body[:60]!r}") from None
    if not isinstance(rows, list):
        raise GarbledResponse(f"{what}: the exchange answered {type(rows).__name__}, not a list of candles")
    for row in rows:
        if not isinstance(row, list | tuple) or len(row) < 6 or not all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in row[:6]):
            raise GarbledResponse(f"{what}: the exchange answered a row that is not a candle: {str(row)[:80]}")
    return rows


def _exchange_urls_setting() -> dict[str, dict[str, str]]:
    try:
        from django.conf import settings

        return dict(getattr(settings, "TRADEBOT_EXCHANGE_URLS", None) or {})
    except Exception:  # noqa: BLE001 - settings not configured (pure use): no overrides
        return {}


def _replace_base(url: str, base: str) -> str:
    """`url` with the scheme, host and port of `base`, keeping its path and query."""
    u, b = urlsplit(url), urlsplit(base)
    return urlunsplit((b.scheme, b.netloc, u.path, u.query, u.fragment))


def override_urls(api: Any, overrides: dict[str, str]) -> Any:
    """A copy of a ccxt `urls["api"]` tree where every ws(s):// URL takes the scheme/host/port of overrides["ws"] and
    every http(s):// URL those of overrides["rest"] (paths kept). Keys absent from `overrides` are left alone."""
    if isinstance(api, dict):
        return {k: override_urls(v, overrides) for k, v in api.items()}
    if isinstance(api, str):
        scheme = api.split("://", 1)[0].lower() if "://" in api else ""
        if scheme in ("ws", "wss") and overrides.get("ws"):
            return _replace_base(api, overrides["ws"])
        if scheme in ("http", "https") and overrides.get("rest"):
            return _replace_base(api, overrides["rest"])
    return api


def apply_url_overrides(client: Any, exchange_id: str, urls: dict[str, dict[str, str]] | None = None) -> Any:
    """Point a ccxt / ccxt.pro client at the hosts of settings.TRADEBOT_EXCHANGE_URLS[exchange_id] (if any)."""
    overrides = (urls if urls is not None else _exchange_urls_setting()).get(exchange_id)
    if overrides:
        unknown = set(overrides) - {"ws", "rest"}
        if unknown:
            raise ProviderError(
                f"TRADEBOT_EXCHANGE_URLS[{exchange_id!r}] has unknown key(s) {sorted(unknown)}: use 'ws' and 'rest'"
            )
        client.urls = {**client.urls, "api": override_urls(client.urls.get("api"), overrides)}
    return client


def _check_id(exchange: str, known: list[str], what: str = "ccxt") -> str:
    exchange_id = (exchange or "").strip().lower()
    if exchange_id not in known:
        close = difflib.get_close_matches(exchange_id, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ProviderError(
            f"unknown {what} exchange id {exchange!r}{hint}; ccxt {ccxt.__version__} knows {len(known)} ids, "
            f"e.g. binance, kraken, okx, coinbase"
        )
    return exchange_id


def make_client(exchange: str, config: dict[str, Any] | None = None) -> ccxt.Exchange:
    """A new ccxt client for an exchange id, rate limiting on, TRADEBOT_EXCHANGE_URLS applied; unknown ids are a
    clear error with suggestions."""
    exchange_id = _check_id(exchange, ccxt.exchanges)
    timeout = {"timeout": int(t)} if (t := _setting("TRADEBOT_EXCHANGE_TIMEOUT_MS", 0)) else {}
    client = getattr(ccxt, exchange_id)({"enableRateLimit": True, **timeout, **(config or {})})
    return apply_url_overrides(client, exchange_id)


def make_pro_client(exchange: str, config: dict[str, Any] | None = None) -> Any:
    """A new ccxt.pro (async, websocket) client, TRADEBOT_EXCHANGE_URLS applied, with the lean trade path where the
    exchange has one (apps.market.providers.lean_trades). Create it inside the event loop."""
    import ccxt.pro as ccxtpro

    from apps.market.providers.lean_trades import lean_client_class

    exchange_id = _check_id(exchange, list(ccxtpro.exchanges), "ccxt.pro")
    config = config or {}
    defaults: dict[str, Any] = {"enableRateLimit": True}
    if not {"ssl_context", "verify", "cafile"} & config.keys():
        defaults["ssl_context"] = shared_ssl_context()
    client = lean_client_class(exchange_id, getattr(ccxtpro, exchange_id))({**defaults, **config})
    return apply_url_overrides(client, exchange_id)


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The TLS context ccxt would build for each client (certifi's CA bundle, certificates and host names checked),
    built once per process: building one parses the whole bundle, ~0.1 s of the event loop on this machine's cores
    (profiled: 20 stream sessions opening spent ~1.9 s in it), and a stream creates a new client on every
    (re)connect, so each takeover or reconnect stalled every other market's candles by that much."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def has_stream(exchange: str) -> bool:
    """Whether ccxt.pro streams this exchange's public trades."""
    import ccxt.pro as ccxtpro

    return (exchange or "").strip().lower() in ccxtpro.exchanges


def shared_client(exchange: str) -> ccxt.Exchange:
    key = (exchange, repr(sorted((_exchange_urls_setting().get(exchange) or {}).items())))
    client = _CLIENTS.get(key)
    if client is None:
        client = _CLIENTS[key] = make_client(exchange)
    return client


class CcxtProvider:
    """Candles and trades from one ccxt exchange.

    since/until are CLOSE times (ms): pages hold candles with since < close <= until. Retries NetworkError (which
    includes RateLimitExceeded, DDoSProtection, ExchangeNotAvailable, RequestTimeout) with exponential back-off for at
    most `max_attempts` tries per request, then re-raises the ccxt error (so a Celery task can retry later).
    """

    name = "ccxt"

    def __init__(
        self,
        exchange: str = "binance",
        *,
        client: ccxt.Exchange | None = None,
        limit: int | None = None,
        clock: Callable[[], int] | None = None,
        sleep: Callable[[float], None] | None = None,
        max_attempts: int | None = None,
        backoff: float | None = None,
        max_backoff: float = 60.0,
        config: dict[str, Any] | None = None,
    ) -> None:
        if client is None:
            client = make_client(exchange, config) if config else shared_client(exchange)
        self.client = client
        self.exchange = exchange
        self.limit = int(limit or _default_limit())
        if self.limit < 1:
            raise ProviderError(f"fetch limit must be >= 1, got {self.limit}")
        self.clock = clock or client.milliseconds
        self.sleep = sleep or time.sleep
        self.max_attempts = max(1, int(max_attempts or _setting("TRADEBOT_FETCH_ATTEMPTS", 5)))
        self.backoff = float(backoff if backoff is not None else _setting("TRADEBOT_FETCH_BACKOFF_S", 1.0))
        self.max_backoff = float(max_backoff)
        self.retries = 0  # retried requests so far (for logs and tests)
        self.requests = 0  # ccxt fetch_* calls so far

    # --- helpers ---------------------------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One ccxt call with bounded exponential back-off on transient (network / rate-limit) errors."""
        delay = self.backoff
        for attempt in range(1, self.max_attempts + 1):
            self.requests += 1
            try:
                return fn(*args, **kwargs)
            except ccxt.BadSymbol as exc:
                raise ProviderError(f"{self.exchange}: unknown symbol in {what}: {exc}") from exc
            except ccxt.NetworkError as exc:
                if attempt >= self.max_attempts:
                    logger.warning("%s %s failed after %d attempts: %s", self.exchange, what, attempt, exc)
                    raise
                self.retries += 1
                logger.info("%s %s: %s (%s); retry %d in %.1fs", self.exchange, what, type(exc).__name__, exc,
                            attempt, delay)
                self.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
        raise AssertionError("unreachable")  # pragma: no cover

    def _load_markets(self) -> None:
        self._call("load_markets", self.client.load_markets)

    def _check(self, symbol: str, timeframe: str) -> None:
        if timeframe not in TIMEFRAMES:
            timeframe_ms(timeframe)  # raises TimeframeError with the list
        self._load_markets()
        if symbol not in self.client.markets:
            close = difflib.get_close_matches(symbol, list(self.client.markets), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ProviderError(f"{self.exchange} has no market {symbol!r}{hint}")
        supported = getattr(self.client, "timeframes", None) or {}
        if supported and timeframe not in supported:
            raise ProviderError(
                f"{self.exchange} does not offer timeframe {timeframe!r} (it offers {', '.join(supported)})"
            )

    # --- candles ---------------------------------------------------------------------------------------------------
    def fetch_candles(
        self, symbol: str, timeframe: str, since: int | None = None, until: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """Pages of closed candles, close-labelled, since < close <= until; stops at now, at until or on no progress."""
        self._check(symbol, timeframe)
        tf = timeframe_ms(timeframe)
        # ccxt's `since` is an OPEN time, inclusive: the first candle closing after `since` opens at this grid point.
        next_open = None if since is None else (since // tf) * tf
        last_open_wanted = None if until is None else (until // tf) * tf - tf
        while True:
            now = int(self.clock())
            if next_open is not None:
                if next_open + tf > now:  # the next candle has not closed yet: nothing more to ask for
                    return
                if last_open_wanted is not None and next_open > last_open_wanted:
                    return
            limit = self.limit
            if next_open is not None and last_open_wanted is not None:  # do not ask for more than the range holds
                limit = min(limit, (last_open_wanted - next_open) // tf + 1)
            what = f"fetch_ohlcv({symbol} {timeframe} since={next_open} limit={limit})"
            rows = self._call(what, lambda what=what, since=next_open, limit=limit: _checked_ohlcv(
                self.client.fetch_ohlcv(symbol, timeframe, since=since, limit=limit), what, self.client))
            if not rows:
                return
            arr = np.asarray([r[:6] for r in rows], dtype=np.float64)
            opens = np.asarray([r[0] for r in rows], dtype=np.int64)
            order = np.argsort(opens, kind="stable")
            opens, arr = opens[order], arr[order]
            closes = opens + tf
            keep = closes <= now  # drop the still-forming candle (and anything from the future)
            if next_open is not None:
                keep &= opens >= next_open
            if since is not None:
                keep &= closes > since
            if until is not None:
                keep &= closes <= until
            page_last_open = int(opens[-1])
            forming_seen = bool((closes > now).any())
            if keep.any():
                sel = arr[keep]
                yield candle_frame_from_arrays(closes[keep], sel[:, 1], sel[:, 2], sel[:, 3], sel[:, 4], sel[:, 5])
            if forming_seen:
                return
            if next_open is not None and page_last_open < next_open:
                return  # no progress: the exchange keeps answering with older candles
            next_open = page_last_open + tf

    # --- trades ----------------------------------------------------------------------------------------------------
    def fetch_trades(self, symbol: str, since: int | None = None, limit: int | None = None) -> pd.DataFrame:
        """Raw public trades as a trades frame (timestamp ms, price, amount, side, trade_id), ascending by time."""
        self._load_markets()
        if symbol not in self.client.markets:
            raise ProviderError(f"{self.exchange} has no market {symbol!r}")
        trades = self._call(
            f"fetch_trades({symbol} since={since})", self.client.fetch_trades, symbol, since=since,
            limit=limit or self.limit,
        )
        if not trades:
            return empty_trades_frame()
        df = pd.DataFrame(
            {
                "timestamp": np.asarray([t["timestamp"] for t in trades], dtype=np.int64),
                "price": np.asarray([t["price"] for t in trades], dtype=np.float64),
                "amount": np.asarray([t["amount"] for t in trades], dtype=np.float64),
                "side": pd.Series([t.get("side") or "" for t in trades], dtype="str"),
                "trade_id": pd.Series(
                    [str(t["id"]) if t.get("id") is not None else f"{t['timestamp']}-{i}"
                     for i, t in enumerate(trades)],
                    dtype="str",
                ),
            }
        )
        return df.sort_values("timestamp", kind="stable").reset_index(drop=True)
