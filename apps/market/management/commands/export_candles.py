"""manage.py export_candles --exchange EX --symbol SYM --timeframe TF [--start] [--end] [--time-label] --output PATH."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import CommandError

from apps.common.management import DomainCommand
from apps.market.csvio import write_candle_csv
from apps.market.management import checked_timeframe
from apps.market.selectors import candle_frame
from apps.market.timeframes import TIMEFRAMES, format_ms, parse_time


class Command(DomainCommand):
    help = (
        "Export stored candles to CSV (timestamp,open,high,low,close,volume; ms UTC). Labels are CLOSE times unless "
        "--time-label open (the exchanges' convention). --start/--end bound close times, inclusive."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--exchange", required=True)
        parser.add_argument("--symbol", required=True, help="unified symbol, e.g. BTC/USDT")
        parser.add_argument("--timeframe", required=True, help=f"one of {', '.join(TIMEFRAMES)}")
        parser.add_argument("--start", help="first close time: ms since epoch or ISO date (UTC)")
        parser.add_argument("--end", help="last close time: ms since epoch or ISO date (UTC)")
        parser.add_argument("--time-label", choices=["close", "open"], default="close", dest="time_label")
        parser.add_argument("--output", required=True, help="CSV to write (.gz compresses)")

    def handle(self, *args, **options) -> None:
        exchange, symbol, timeframe = options["exchange"], options["symbol"], checked_timeframe(options["timeframe"])
        bounds: dict[str, int | None] = {}
        for name in ("start", "end"):
            raw = options[name]
            try:
                bounds[name] = None if raw is None else parse_time(str(raw))
            except ValueError as exc:
                raise CommandError(f"--{name}: {exc}", returncode=2)
        start, end = bounds["start"], bounds["end"]
        if start is not None and end is not None and start > end:
            raise CommandError(f"--start {start} is after --end {end}", returncode=2)
        output = Path(options["output"])
        if not output.parent.is_dir():
            raise CommandError(f"--output {output}: directory {output.parent} does not exist", returncode=2)

        df = candle_frame(exchange=exchange, symbol=symbol, timeframe=timeframe, start=start, end=end)
        if df.empty:
            span = "" if start is None and end is None else f" between {start} and {end}"
            raise CommandError(f"no {timeframe} candles stored for {exchange} {symbol}{span}; nothing exported")
        try:
            rows = write_candle_csv(df, output, timeframe=timeframe, time_label=options["time_label"])
        except OSError as exc:
            raise CommandError(f"--output {output}: cannot write ({exc.strerror or exc})")
        first, last = int(df["timestamp"].iloc[0]), int(df["timestamp"].iloc[-1])
        self.stdout.write(
            f"exported {rows} {exchange} {symbol} {timeframe} candles (close {format_ms(first)} .. {format_ms(last)} "
            f"UTC, {options['time_label']}-time labels) -> {output}"
        )
