"""manage.py bot start|stop|restart NAME... | --all, and bot status [NAME...] [--json].

`start` trades from the next closed candle (stored history only warms the indicators); a bot that ran before skips
what it missed while stopped unless `--catch-up`. `restart` = stop + start (same options).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandParser

from apps.common.management import DomainCommand, usage_error


class Command(DomainCommand):
    help = "Start, stop, restart bots by name (or --all); `bot status` shows their state."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        for action in ("start", "stop", "restart"):
            p = sub.add_parser(action, help=f"{action} bots")
            p.add_argument("names", nargs="*", metavar="NAME")
            p.add_argument("--all", action="store_true", help="every bot")
            if action != "stop":
                p.add_argument("--catch-up", action="store_true",
                               help="decide the candles missed while stopped (default: resume at the next candle)")
        p = sub.add_parser("status", help="status, last decided candle, heartbeat age, equity, position, errors")
        p.add_argument("names", nargs="*", metavar="NAME")
        p.add_argument("--json", action="store_true", help="one JSON object {bots: [...]}")

    def _bots(self, options: dict[str, Any], *, default_all: bool):
        from apps.bots.models import Bot

        names = options.get("names") or []
        if options.get("all") and names:
            raise usage_error("give bot names or --all, not both")
        if not names and not (options.get("all") or default_all):
            raise usage_error("give at least one bot name, or --all")
        if not names:
            return list(Bot.objects.order_by("name"))
        found = {b.name: b for b in Bot.objects.filter(name__in=names)}
        missing = [n for n in names if n not in found]
        if missing:
            raise usage_error(f"unknown bot {missing[0]!r} (see `manage.py bot status`)")
        return [found[n] for n in names]

    def handle(self, *args: Any, **options: Any) -> None:
        from apps.bots import services
        from apps.common.errors import ApplicationError

        action = options["action"]
        if action == "status":
            return self._status(self._bots(options, default_all=True), as_json=options["json"])
        bots = self._bots(options, default_all=False)
        for bot in bots:
            try:
                if action in ("stop", "restart"):
                    services.stop_bot(bot)
                if action in ("start", "restart"):
                    bot = services.start_bot(bot, catch_up=options.get("catch_up", False))
            except (ApplicationError, ValueError) as exc:
                raise usage_error(f"{bot.name}: {exc}")
            bot.refresh_from_db()
            self.stdout.write(f"{bot.name}: {bot.status}")

    def _status(self, bots, *, as_json: bool) -> None:
        from apps.bots.selectors import bot_status_rows

        rows = bot_status_rows(bots)
        if as_json:
            self.stdout.write(json.dumps({"bots": rows}))
            return
        if not rows:
            self.stdout.write("no bots")
            return
        for r in rows:
            beat = "-" if r["heartbeat_age_s"] is None else f"{r['heartbeat_age_s']:.0f}s"
            equity = "-" if r["equity"] is None else f"{r['equity']:,.2f}"
            last = r["last_decided_iso"] or "-"
            pos = f"{r['position']:g} @ {r['entry_price']:g}" if r["position"] else "flat"
            line = (f"{r['name']}: {r['status']}, last decided {last}, heartbeat {beat} ago, equity {equity}, {pos}, "
                    f"{r['restarts_last_hour']} restart(s) in the last hour")
            if r["last_error"]:
                line += f", last error: {r['last_error']}"
            self.stdout.write(line)
