"""manage.py stream [--exchange EX --symbol SYM ...]: the live-data role (ccxt.pro trade streams -> 1m candles).

Streams every watched 1m market whose mode is `stream`, sharing them with the other stream processes through leases
(start as many as you like, on any machine). Markets named on the command line become watched 1m stream markets.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from django.core.management.base import CommandError

from apps.common.errors import ApplicationError
from apps.common.management import DomainCommand
from apps.market.models import Market
from apps.market.services import market_watch

logger = logging.getLogger("apps.market.stream")


class Command(DomainCommand):
    help = ("Stream trades of the watched `stream`-mode 1m markets through ccxt.pro, aggregate them into 1m candles "
            "and store/publish each one moments after its close. Leases markets in Redis: run several for scale-out.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--exchange", help="ccxt exchange id of the --symbol markets (e.g. binance)")
        parser.add_argument("--symbol", action="append", default=[], help="unified symbol, repeatable (BTC/USDT)")
        parser.add_argument("--store-raw-trades", action="store_true",
                            help="also store every trade of the named markets in raw_trades")
        parser.add_argument("--only-named", action="store_true",
                            help="stream only the markets named here, not every watched stream market")
        parser.add_argument("--max-markets", type=int, default=None, help="lease at most this many markets")

    def handle(self, *args, **opts) -> None:
        from apps.market.providers.ccxt import has_stream
        from apps.market.stream import StreamProcess, run_loop

        if opts["symbol"] and not opts["exchange"]:
            raise CommandError("stream: --symbol needs --exchange", returncode=2)
        ids = []
        if opts["exchange"]:
            exchange = opts["exchange"].strip().lower()
            if not has_stream(exchange):
                raise CommandError(f"stream: ccxt.pro has no stream for exchange {exchange!r}; "
                                   "keep it on beat polling (Market.mode = poll)", returncode=2)
            for symbol in opts["symbol"]:
                try:
                    market = market_watch(exchange=exchange, symbol=symbol, timeframe="1m", provider="ccxt")
                except ApplicationError as exc:
                    raise CommandError(f"stream --{exc.field or 'symbol'}: {exc.message}", returncode=2)
                fields = {"mode": Market.Mode.STREAM}
                if opts["store_raw_trades"]:
                    fields["store_raw_trades"] = True
                Market.objects.filter(pk=market.pk).update(**fields)
                ids.append(market.pk)
        process = StreamProcess(market_ids=ids if opts["only_named"] else None, max_markets=opts["max_markets"])
        count = Market.objects.filter(mode=Market.Mode.STREAM, watched=True, timeframe="1m").count()
        self.stdout.write(f"stream {process.owner}: {count} stream market(s) to share; Ctrl-C stops", ending="\n")
        self.stdout.flush()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, process.stop)
            await process.run()

        run_loop(main())
