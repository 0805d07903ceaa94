"""Django signals of the market app.

`candles_closed(sender=Market, closed=[(market, timestamps), ...])` is sent after the transaction that stored NEW closed
candles commits, so dependent work (bot ticks, derived timeframes) never sees candles that were rolled back. One send
per commit, or one for a whole `apps.market.services.announce_together()` block (the stream's writer stores every
market's simultaneous close in one): the receiver plans the work of many markets at once (bot ticks packed into a few
shards, not one task per market).
"""

from __future__ import annotations

import django.dispatch

candles_closed = django.dispatch.Signal()
