"""manage.py import_trades PATH --exchange EX --symbol SYM: raw trades CSV into raw_trades (month partitions on PG)."""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from apps.common.management import DomainCommand
from apps.market.csvio import CsvFormatError, read_trades_csv
from apps.market.services import ingest_trades_detailed

SHOWN_REJECTIONS = 5


class Command(DomainCommand):
    help = "Import raw trades from a CSV (timestamp,price,amount[,side,id]) into raw_trades; known trades are skipped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="CSV with header timestamp,price,amount[,side,id,...] (.csv or .csv.gz)")
        parser.add_argument("--exchange", help="exchange id, e.g. binance")
        parser.add_argument("--symbol", help="unified symbol, e.g. XRP/ETH")

    def handle(self, *args, **opts) -> None:
        path = opts["path"]
        for name in ("exchange", "symbol"):
            if not opts.get(name):
                raise CommandError(f"import_trades {path}: --{name} is required", returncode=2)
        try:
            df = read_trades_csv(path)
        except CsvFormatError as exc:
            raise CommandError(str(exc))
        except (OSError, ValueError) as exc:
            raise CommandError(f"{path}: {exc}")
        res = ingest_trades_detailed(exchange=opts["exchange"], symbol=opts["symbol"], df=df)
        valid = res.received - len(res.rejected)
        parts = f", partitions created: {', '.join(res.partitions_created)}" if res.partitions_created else ""
        self.stdout.write(
            f"{path}: {opts['exchange']} {opts['symbol']}: received {res.received}, inserted {res.inserted}, "
            f"already stored {valid - res.inserted}, rejected {len(res.rejected)}{parts}"
        )
        for r in res.rejected[:SHOWN_REJECTIONS]:
            self.stdout.write(f"  {r.message} (data row {r.row + 1})")
