"""manage.py backfill --exchange EX --symbol SYM --timeframe TF --since DATE [--until DATE] [--provider ccxt]."""

from __future__ import annotations

import ccxt
from django.core.management.base import CommandError

from apps.common.management import DomainCommand
from apps.market.collector import backfill
from apps.market.management import checked_timeframe
from apps.market.providers.base import ProviderError
from apps.market.timeframes import TIMEFRAMES, parse_time


class Command(DomainCommand):
    help = (
        "Fetch and store the history of closed candles closing in [--since, --until] (DATE = ISO date/datetime in UTC "
        "or ms since epoch; --until defaults to the last closed candle). Resumable: what the ledger already covers is "
        "not fetched again. Gaps are re-requested once; gaps the exchange has no data for are recorded as outages."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--exchange", required=True, help="ccxt exchange id, e.g. binance")
        parser.add_argument("--symbol", required=True, help="unified symbol, e.g. BTC/USDT")
        parser.add_argument("--timeframe", required=True, help=f"one of {', '.join(TIMEFRAMES)}")
        parser.add_argument("--since", required=True, help="first close time: 2023-04-01, 2023-04-01T12:00 or ms")
        parser.add_argument("--until", default=None, help="last close time (default: the last closed candle)")
        parser.add_argument("--provider", default=None, help="provider registry name (default: the market's, or ccxt)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar (it is off when not a tty)")

    def handle(self, *args, **options) -> None:
        exchange, symbol, timeframe = options["exchange"], options["symbol"], checked_timeframe(options["timeframe"])
        try:
            since = parse_time(options["since"])
        except ValueError as exc:
            raise CommandError(f"--since: {exc}", returncode=2)
        until = None
        if options["until"] is not None:
            try:
                until = parse_time(options["until"])
            except ValueError as exc:
                raise CommandError(f"--until: {exc}", returncode=2)
            if until < since:
                raise CommandError(f"--until {options['until']} is before --since {options['since']}", returncode=2)
        try:
            report = backfill(
                exchange, symbol, timeframe, since, until, provider=options["provider"],
                progress=not options["no_progress"],
            )
        except ProviderError as exc:
            raise CommandError(str(exc), returncode=2)
        except ValueError as exc:
            raise CommandError(str(exc), returncode=2)
        except ccxt.BaseError as exc:
            raise CommandError(
                f"{exchange} {symbol} {timeframe}: {type(exc).__name__}: {exc} (stored pages are kept; rerun to resume)"
            )
        self.stdout.write(report.summary())
