"""manage.py import_candles PATH --exchange EX --symbol SYM --timeframe TF --time-label open|close

`--time-label` is required with no default: a CSV does not say whether its timestamps are candle open or close times,
and a wrong guess silently shifts every candle by one timeframe.
"""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from apps.common.management import DomainCommand
from apps.market.csvio import CsvFormatError, read_candle_csv
from apps.market.management import checked_timeframe
from apps.market.services import (
    IngestResult,
    changed_candles,
    describe_spacing,
    ingest_candles,
    mark_source_empty,
)
from apps.market.timeframes import TIMEFRAMES, format_ms

SHOWN_REJECTIONS = 5


class Command(DomainCommand):
    help = "Import OHLCV candles from a CSV (.csv or .csv.gz) into market_data (idempotent upsert, validated)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="CSV with header timestamp,open,high,low,close,volume (extra columns ignored)")
        parser.add_argument("--exchange", help="exchange id, e.g. binance")
        parser.add_argument("--symbol", help="unified symbol, e.g. BTC/USDT")
        parser.add_argument("--timeframe", help=f"one of {', '.join(TIMEFRAMES)}")
        parser.add_argument(
            "--time-label", dest="time_label",
            help="REQUIRED: 'open' if the file's timestamps are candle open times (exchanges, ccxt, freqtrade), "
            "'close' if they are close times",
        )
        parser.add_argument("--quiet", action="store_true", help="No progress bar (also off when stderr is no TTY)")
        parser.add_argument("--batch-size", type=int, default=200_000, help="rows per transaction (default 200000)")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace stored candles whose values differ (without it such an import is refused)")
        parser.add_argument("--publish", action="store_true",
                            help="announce new candles on market:{symbol} and to bots (off for history imports)")

    def handle(self, *args, **opts) -> None:
        path = opts["path"]
        for name in ("exchange", "symbol", "timeframe"):
            if not opts.get(name):
                raise CommandError(f"import_candles {path}: --{name} is required", returncode=2)
        label = opts.get("time_label")
        if not label:
            raise CommandError(
                f"import_candles {path}: --time-label open|close is required: a CSV does not say whether its "
                "timestamps are candle open or close times, and a guess would shift every candle by one timeframe",
                returncode=2,
            )
        if label not in ("open", "close"):
            raise CommandError(f"import_candles {path}: --time-label must be 'open' or 'close', got {label!r}",
                               returncode=2)
        checked_timeframe(opts["timeframe"], context=f"import_candles {path}: ")
        if opts["batch_size"] < 1:
            raise CommandError(f"import_candles {path}: --batch-size must be >= 1", returncode=2)
        try:
            df = read_candle_csv(path, timeframe=opts["timeframe"], time_label=label)
        except CsvFormatError as exc:
            raise CommandError(str(exc))
        except (OSError, ValueError) as exc:
            raise CommandError(f"{path}: {exc}")

        misfit = describe_spacing(df["timestamp"].to_numpy(), opts["timeframe"])
        if misfit:
            raise CommandError(f"import_candles {path}: refused: {misfit}, not --timeframe {opts['timeframe']}",
                               returncode=2)
        changed = changed_candles(exchange=opts["exchange"], symbol=opts["symbol"], timeframe=opts["timeframe"],
                                  df=df)
        if changed and not opts["overwrite"]:
            first = changed[0]
            raise CommandError(
                f"import_candles {path}: refused: {len(changed)} stored candle(s) would change (first at "
                f"{format_ms(first)} close time); re-run with --overwrite to replace them", returncode=2)
        total = IngestResult(received=0, stored=0, rejected=[], new_timestamps=[])
        size = opts["batch_size"]
        from apps.common.progress import progress_bar

        bar = progress_bar(len(df), f"import {opts['symbol']} {opts['timeframe']}", quiet=opts.get("quiet", False),
                           unit="candle")
        for lo in range(0, len(df), size):
            part = df.iloc[lo:lo + size]
            res = ingest_candles(exchange=opts["exchange"], symbol=opts["symbol"], timeframe=opts["timeframe"],
                                 df=part, publish=opts["publish"])
            for r in res.rejected:
                r.row = None if r.row is None else r.row + lo
            total.received += res.received
            total.stored += res.stored
            total.updated += res.updated
            total.rejected += res.rejected
            total.new_timestamps += res.new_timestamps
            if bar is not None:
                bar.update(len(part))
        if bar is not None:
            bar.close()
        if len(df):
            # The file is the source for its whole span: a hole inside it is "the source has nothing here" (settled
            # for rollups), not "not fetched yet".
            from apps.market.models import Market

            market = Market.objects.filter(exchange=opts["exchange"], symbol=opts["symbol"],
                                           timeframe=opts["timeframe"]).first()
            if market is not None:
                ts = df["timestamp"]
                mark_source_empty(market=market, start=int(ts.min()), end=int(ts.max()),
                                  note=f"import: no row in {path}"[:200])
        self.stdout.write(
            f"{path}: {opts['exchange']} {opts['symbol']} {opts['timeframe']} (time label {label}): {total.summary()}"
        )
        for r in total.rejected[:SHOWN_REJECTIONS]:
            line = f" (data row {r.row + 1})" if r.row is not None else ""
            self.stdout.write(f"  {r.message}{line}")
        if len(total.rejected) > SHOWN_REJECTIONS:
            self.stdout.write(f"  ... and {len(total.rejected) - SHOWN_REJECTIONS} more rejected rows")
