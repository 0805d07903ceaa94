"""manage.py check_strategy NAME: lookahead, recursion/warm-up and parameter-schema checks for any strategy.

Prints a table (or --json) and exits 1 when a check finds a problem, 2 on bad input. The checks themselves are pure
(`apps.bots.strategies.checks`); this command only loads the candles (a CSV file or stored candles).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from apps.backtest.management.cli import add_source_arguments, data_options, parse_json_arg
from apps.common.management import DomainCommand, one_line, usage_error


class Command(DomainCommand):
    help = ("Check a strategy for lookahead bias (vectorized vs process_data at every row, truncated data), "
            "recursive-indicator warm-up and its parameter schema; exit 1 on a problem.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Registered strategy name (built-in or user)")
        parser.add_argument("--params", default=None, help='Strategy parameters as JSON, e.g. {"fast": 10}')
        add_source_arguments(parser)
        parser.add_argument("--limit", type=int, default=5000, help="Use the last N candles (default 5000)")
        parser.add_argument("--rows", type=int, default=2000,
                            help="Rows checked against process_data on their prefix (the last N; default 2000)")
        parser.add_argument("--cuts", type=int, default=20, help="Random truncation points (default 20)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of the table")

    def handle(self, *args: Any, **options: Any) -> None:
        from apps.backtest import services
        from apps.bots.strategies.checks import run_checks

        params = parse_json_arg(options.get("params"), "--params", default={})
        if not isinstance(params, dict):
            raise usage_error(f"--params must be a JSON object, got {type(params).__name__}")
        for key in ("limit", "rows", "cuts"):
            if options[key] < 1:
                raise usage_error(f"--{key} must be >= 1, got {options[key]}")
        data = data_options(options)
        try:
            cls = services.resolve_strategy(options["name"])
            services.build_strategy(options["name"], params)
        except services.BacktestInputError as exc:
            raise usage_error(str(exc))
        try:
            if "data_file" in data:
                loaded = services.load_csv_frame(data["data_file"], timeframe=data["timeframe"],
                                                 time_label=data["time_label"], start=data.get("start"),
                                                 end=data.get("end"))
            else:
                loaded = services.load_db_frame(exchange=data["exchange"], symbol=data["symbol"],
                                                timeframe=data["timeframe"], start=data.get("start"),
                                                end=data.get("end"))
        except (OSError, ValueError) as exc:
            raise CommandError(one_line(exc))
        df = loaded.df.iloc[-options["limit"]:]
        if len(df) < 50:
            raise CommandError(f"only {len(df)} candles: the checks need at least 50 (more for the warm-up check)")
        report = run_checks(cls, params, df, rows=options["rows"], cuts=options["cuts"], seed=options["seed"])
        if options["json"]:
            self.stdout.write(json.dumps({
                "strategy": report.strategy, "parameters": report.parameters, "ok": report.ok,
                "warmup_needed": report.warmup_needed,
                "rows": [{"check": r.check, "subject": r.subject, "result": r.result, "ok": r.ok}
                         for r in report.rows],
            }))
        else:
            self.stdout.write(f"{report.strategy} {json.dumps(report.parameters)} on {len(df)} candles")
            self.stdout.write(report.table())
            problems = sum(1 for r in report.rows if not r.ok)
            self.stdout.write("no problem found" if not problems else f"{problems} problem(s) found")
        if not report.ok:
            raise CommandError("check_strategy found a problem (see the table)", returncode=1)
