"""manage.py aggregate_trades PATH --timeframe TF --output PATH [--fill]: a trades CSV -> a candle CSV.

Works without any database (file in, file out): the command never touches the ORM and skips the system checks.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import CommandError

from apps.common.management import DomainCommand
from apps.market.aggregation import trades_to_candles
from apps.market.csvio import CsvFormatError, read_trades_csv, write_candle_csv
from apps.market.management import checked_timeframe
from apps.market.timeframes import TIMEFRAMES


class Command(DomainCommand):
    help = (
        "Aggregate a trades CSV (timestamp,price,amount[,side,id,...]; ms UTC) into candles [t - tf, t) written as "
        "timestamp,open,high,low,close,volume with CLOSE-time labels. --fill adds flat zero-volume candles for "
        "intervals without trades, flagged in a 'filled' column. Needs no database."
    )
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", help="trades CSV (.csv or .csv.gz)")
        parser.add_argument("--timeframe", required=True, help=f"one of {', '.join(TIMEFRAMES)}")
        parser.add_argument("--output", required=True, help="candle CSV to write (.gz compresses)")
        parser.add_argument("--fill", action="store_true", help="emit flat zero-volume candles for empty intervals")

    def handle(self, *args, **options) -> None:
        path = Path(options["path"])
        output = Path(options["output"])
        timeframe = checked_timeframe(options["timeframe"])
        if not output.parent.is_dir():
            raise CommandError(f"--output {output}: directory {output.parent} does not exist", returncode=2)
        try:
            trades = read_trades_csv(path)
        except CsvFormatError as exc:
            raise CommandError(str(exc))
        try:
            candles = trades_to_candles(
                trades["timestamp"].to_numpy(),
                trades["price"].to_numpy(),
                trades["amount"].to_numpy(),
                timeframe,
                fill=options["fill"],
            )
        except ValueError as exc:
            raise CommandError(f"{path}: {exc}")
        try:
            write_candle_csv(candles, output, timeframe=timeframe, time_label="close")
        except OSError as exc:
            raise CommandError(f"--output {output}: cannot write ({exc.strerror or exc})")
        filled = int(candles["filled"].sum()) if "filled" in candles.columns else 0
        extra = f" ({filled} filled)" if options["fill"] else ""
        self.stdout.write(f"{len(trades)} trades from {path} -> {len(candles)} {timeframe} candles{extra} -> {output}")
