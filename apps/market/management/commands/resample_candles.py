"""manage.py resample_candles --exchange EX --symbol SYM --from 1m --to TF: build and store a higher timeframe."""

from __future__ import annotations

from django.core.management.base import CommandError

from apps.common.management import DomainCommand
from apps.market.aggregation import check_resample
from apps.market.selectors import last_candle_timestamp
from apps.market.services import resample_stored
from apps.market.timeframes import TIMEFRAMES, TimeframeError


class Command(DomainCommand):
    help = (
        "Build TF candles from stored --from candles (default 1m) and store them (idempotent upsert). Only complete "
        "buckets are built: a bucket missing any source candle (an exchange outage, the still-open end) is skipped. "
        "Resumes at the last stored TF candle."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--exchange", required=True)
        parser.add_argument("--symbol", required=True, help="unified symbol, e.g. BTC/USDT")
        parser.add_argument("--from", dest="source", default="1m", help=f"source timeframe ({', '.join(TIMEFRAMES)})")
        parser.add_argument("--to", dest="target", required=True, help="target timeframe, a multiple of --from")

    def handle(self, *args, **options) -> None:
        exchange, symbol, source, target = options["exchange"], options["symbol"], options["source"], options["target"]
        try:
            check_resample(source, target)
        except TimeframeError as exc:
            raise CommandError(f"--from/--to: {exc}", returncode=2)
        if source == target:
            raise CommandError(f"--from and --to are both {source}: nothing to build", returncode=2)
        if last_candle_timestamp(exchange, symbol, source) is None:
            raise CommandError(f"no {source} candles stored for {exchange} {symbol}; collect or import them first")
        result = resample_stored(exchange=exchange, symbol=symbol, source_tf=source, target_tf=target)
        self.stdout.write(
            f"{exchange} {symbol} {source} -> {target}: built {result.received} complete candles, "
            f"{len(result.new_timestamps)} new, {result.stored} stored, {len(result.rejected)} rejected"
        )
        for rejection in result.rejected[:5]:
            self.stderr.write(f"rejected: {rejection}")
