"""A lean path through ccxt.pro for the one message shape the stream lives on: Binance's public trade events.

ccxt.pro spends ~20-60 µs on every `trade` / `aggTrade` message (its generic dispatch builds a 40-entry handler table
per message, then parse_trade, safe_trade, an ISO date string and a Precise string multiplication for `cost`): that
alone caps one process below 50,000 trades/s. The stream reads five fields of a trade, so for exactly that shape this
handler builds them directly (~2 µs) and leaves everything else to ccxt.pro: the websocket client, subscriptions,
pings, reconnects, the trades cache and the futures `watch_trades` resolves, and every other message (subscription
replies, errors, option markets, private events, a trade missing a field) goes through ccxt.pro's own `handle_message`.

The trade it caches holds `info, timestamp, symbol, id, side, price, amount`, each equal to what ccxt.pro's own
parse_ws_trade gives for the same message (tests/apps/market/test_lean_trades.py checks every recorded
trade, both event kinds); ccxt's derived fields (`datetime`, `cost`, `takerOrMaker`, `fee`) are not built.
"""

from __future__ import annotations

import functools
from typing import Any

from ccxt.async_support.base.ws.cache import ArrayCache

_EVENT_ID = {"trade": "t", "aggTrade": "a"}  # Binance numbers trades and aggregate trades separately
# Keys of the message shapes ccxt.pro's dispatch treats specially (combined-stream wrappers, WebSocket API replies,
# errors, execution reports): a message with any of them is not a plain public trade.
_NOT_PLAIN = frozenset(("stream", "data", "event", "status", "error", "id", "x"))


class LeanBinanceTrades:
    """Mixed in before a ccxt.pro Binance class (see `lean_client_class`)."""

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config or {})
        self._lean_symbols: dict[tuple[str, str], str | None] = {}

    def handle_message(self, client, message):
        if type(message) is dict and _NOT_PLAIN.isdisjoint(message):
            id_key = _EVENT_ID.get(message.get("e"))
            if id_key is not None:
                try:
                    if self._handle_lean_trade(client, message, id_key):
                        return None
                except (KeyError, TypeError, ValueError):
                    pass  # not the shape we know: ccxt.pro's own handler decides (and raises) as it would
        return super().handle_message(client, message)

    def _handle_lean_trade(self, client, message: dict, id_key: str) -> bool:
        symbol = self._lean_symbol(message["s"], "spot" if self.is_spot_url(client) else "contract")
        if symbol is None:
            return False
        trade = {
            "info": message, "timestamp": int(message["T"]), "symbol": symbol, "id": str(message[id_key]),
            "side": "sell" if message["m"] else "buy",  # buyer is maker: the taker sold (as ccxt: reversed on purpose)
            "price": float(message["p"]), "amount": float(message["q"]),
        }
        cache = self.trades.get(symbol)
        if cache is None:
            cache = self.trades[symbol] = ArrayCache(self.safe_integer(self.options, "tradesLimit", 1000))
        cache.append(trade)
        client.resolve(cache, "trade::" + symbol)
        return True

    def _lean_symbol(self, market_id: str, market_type: str) -> str | None:
        """The symbol ccxt.pro's handle_trade resolves for this id and URL type; None for options, whose trades ccxt
        parses differently (signed amounts, their own sides), and None before the markets are loaded (ccxt.pro then
        resolves the id its own way, and nothing is cached from an empty market table)."""
        key = (market_id, market_type)
        if key not in self._lean_symbols:
            if not self.markets:
                return None
            market = self.safe_market(market_id, None, None, market_type)
            self._lean_symbols[key] = None if market.get("option") else market["symbol"]
        return self._lean_symbols[key]


LEAN_TRADE_EXCHANGES = {"binance": LeanBinanceTrades, "binanceus": LeanBinanceTrades}


@functools.cache
def lean_client_class(exchange_id: str, base: type) -> type:
    """`base` (a ccxt.pro class) with the lean trade path of `exchange_id` mixed in, or `base` when it has none."""
    mixin: Any = LEAN_TRADE_EXCHANGES.get(exchange_id)
    return base if mixin is None else type(base.__name__, (mixin, base), {"__module__": __name__})
