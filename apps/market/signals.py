"""Django signals of the market app.

`candles_closed(sender=Market, market=market, timestamps=[...])` is sent after the transaction that stored NEW closed
candles commits, so dependent work (bot ticks, derived timeframes) never sees candles that were rolled back.
"""

from __future__ import annotations

import django.dispatch

candles_closed = django.dispatch.Signal()
