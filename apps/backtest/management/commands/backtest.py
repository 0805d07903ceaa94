"""manage.py backtest: one strategy over a CSV file (no database) or stored candles (stored as a BacktestRun).

Times are ms UTC close times (ISO dates accepted). Bad strategy names, parameters, JSON or arguments exit 2 with one
line on stderr; data problems exit 1.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from apps.backtest.formatting import format_money, format_price, format_time
from apps.backtest.management.cli import (
    add_data_arguments,
    add_detail_argument,
    data_options,
    metrics_table,
    model_rules,
    one_line,
    parse_json_arg,
    rules_options,
)
from apps.common.management import DomainCommand, usage_error
from tradebot import memory


class Command(DomainCommand):
    help = "Backtest one strategy over a CSV file or stored candles; prints metrics (or --json) and writes --report."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--strategy", required=True, help="Registered strategy name, e.g. sma_cross")
        parser.add_argument("--params", default=None, help='Strategy parameters as JSON, e.g. {"fast": 10}')
        add_data_arguments(parser)
        parser.add_argument("--json", action="store_true", help="Print ONE JSON object (metrics, trades, ...)")
        parser.add_argument("--report", help="Write a self-contained offline HTML report to this path")
        add_detail_argument(parser)
        parser.add_argument("--detail-data", help="With --data: a 1m candle CSV (same --time-label) for --detail 1m")

    def handle(self, *args: Any, **options: Any) -> None:
        memory.tune_allocator()  # a compute process: tuned where it starts (tradebot.memory), never by the engine
        from apps.backtest import services

        self.options = options
        params = parse_json_arg(options.get("params"), "--params", default={})
        if not isinstance(params, dict):
            raise usage_error(f"--params must be a JSON object, got {type(params).__name__}")
        data = data_options(options)
        rules = rules_options(options)
        if options.get("detail") and "data_file" in data and not (options["detail"] == "1m"
                                                                   and options.get("detail_data")):
            raise usage_error("--detail with --data needs --detail 1m --detail-data FILE (1m candles); "
                      "trades detail reads stored raw trades: use --exchange/--symbol")
        if options.get("detail_data") and not options.get("detail"):
            raise usage_error("--detail-data needs --detail 1m")
        try:
            services.build_strategy(options["strategy"], params)
        except services.BacktestInputError as exc:
            raise usage_error(str(exc))
        try:
            if "data_file" in data:
                payload, df = self._from_file(data, options["strategy"], params, rules)
            else:
                payload, df = self._from_db(data, options["strategy"], params, rules)
        except services.BacktestInputError as exc:
            raise CommandError(one_line(exc))
        except (OSError, ValueError) as exc:
            raise CommandError(one_line(exc))
        if options.get("report"):
            from apps.backtest.report import write_report

            title = f"{options['strategy']} {json.dumps(payload.get('parameters', params))} " + (
                data.get("data_file") or f"{data.get('exchange')} {data.get('symbol')}") + f" {data['timeframe']}"
            write_report(options["report"], title=title, df=df, result=payload, timeframe=data["timeframe"],
                         strategy=options["strategy"], parameters=payload.get("parameters", params))
        out = {k: payload[k] for k in ("metrics", "trades", "open_trade", "final_equity", "warnings")}
        if payload.get("detail") is not None:
            out["detail"] = payload["detail"]
        if options.get("json"):
            self.stdout.write(json.dumps(out, allow_nan=False))
            return
        self._print_human(out, data, options)

    def _from_file(self, data: dict[str, Any], strategy: str, params: dict, rules: dict) -> tuple[dict, Any]:
        """No ORM on this path: the CSV is read, validated and backtested in memory."""
        from apps.backtest import services
        from apps.backtest.engine.metrics import jsonable

        loaded = services.load_csv_frame(data["data_file"], timeframe=data["timeframe"], time_label=data["time_label"],
                                         start=data.get("start"), end=data.get("end"))
        detail = None
        if self.options.get("detail"):
            fine = services.load_csv_frame(self.options["detail_data"], timeframe="1m",
                                           time_label=data["time_label"])
            detail = ("1m", services.frame_detail_source(fine.df, candle_ts=loaded.df["timestamp"].to_numpy(),
                                                         timeframe=data["timeframe"]))
        result = services.run_in_memory(loaded.df, strategy=strategy, parameters=params, timeframe=data["timeframe"],
                                        rules_kwargs=rules, extra_warnings=loaded.warnings, detail=detail)
        payload = jsonable(result.to_dict())
        payload["equity_curve"] = jsonable(result.equity_curve(max_points=5000))
        return payload, loaded.df

    def _from_db(self, data: dict[str, Any], strategy: str, params: dict, rules: dict) -> tuple[dict, Any]:
        from apps.backtest import services
        from apps.backtest.models import Status

        run = services.create_run(strategy=strategy, parameters=params, enqueue=False, **data, **model_rules(rules),
                                  detail=self.options.get("detail") or "")
        try:
            run = services.execute_run(run.pk)
        except Exception:  # noqa: BLE001 - stored on the run by execute_run; the command reports one line
            run.refresh_from_db()
        if run.status != Status.DONE:
            raise CommandError(f"backtest run #{run.pk} failed: {run.error}")
        self.stderr.write(f"stored as backtest run #{run.pk}")
        payload = {"metrics": run.metrics, "trades": run.trades, "open_trade": run.open_trade,
                   "final_equity": run.final_equity, "warnings": run.warnings, "equity_curve": run.equity_curve,
                   "parameters": run.parameters, "detail": run.detail_report}
        df = services.load_data(run).df
        return payload, df

    def _print_human(self, out: dict[str, Any], data: dict[str, Any], options: dict[str, Any]) -> None:
        source = data.get("data_file") or f"{data.get('exchange')} {data.get('symbol')}"
        self.stdout.write(f"{options['strategy']} on {source} {data['timeframe']}")
        self.stdout.write(metrics_table(out["metrics"]))
        self.stdout.write(f"  closed trades: {len(out['trades'])}; final equity {format_money(out['final_equity'])}")
        if out["open_trade"]:
            ot = out["open_trade"]
            self.stdout.write(f"  open trade since {format_time(ot.get('entry_time'))} at "
                              f"{format_price(ot.get('entry_price'))}")
        det = out.get("detail")
        if det:
            diff = det.get("metric_diff") or {}
            shown = ", ".join(f"{k} {v:+.6g}" for k, v in diff.items()
                              if k in ("total_return_pct", "sharpe", "max_drawdown_pct", "final_equity"))
            self.stdout.write(f"  detail {det['source']}: {det['ambiguous_exits']} ambiguous exits on candles alone, "
                              f"{det['changed']} changed by the detail, {det['missing']} without detail data; vs "
                              f"candle-only: {shown or 'no metric changed'}")
        for w in out["warnings"]:
            self.stdout.write(f"  warning: {w}")
        if options.get("report"):
            self.stdout.write(f"  report written to {options['report']}")
