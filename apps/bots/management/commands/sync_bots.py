"""manage.py sync_bots [--dir DIR]: create/update bots from config files (single bots and fleet files).

A bad file is one stderr line naming the file and the field; the other files still load; exit 2 if any was bad.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser

from apps.common.management import DomainCommand


class Command(DomainCommand):
    help = "Create or update bots from config/bots/*.json (or --dir); bad files are reported, the others load."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dir", help="Config folder (default settings.TRADEBOT_BOT_CONFIG_DIR)")

    def handle(self, *args: Any, **options: Any) -> None:
        from apps.bots import services

        report = services.sync_bots(Path(options["dir"]) if options.get("dir") else None)
        for line in report.errors:
            self.stderr.write(" ".join(line.split()))
        files = sorted({b.config_file for b in report.bots})
        self.stdout.write(f"synced {len(report.bots)} bot(s) from {len(files)} file(s); {len(report.errors)} bad "
                          f"file(s)")
        if report.errors:
            raise SystemExit(2)
