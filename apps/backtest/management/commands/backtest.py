"""manage.py backtest: one strategy over a CSV file (no database) or stored candles (stored as a BacktestRun).

Times are ms UTC close times (ISO dates accepted). Bad strategy names, parameters, JSON or arguments exit 2 with one
line on stderr; data problems exit 1.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.backtest.formatting import format_metric, format_value
from apps.market.timeframes import TIMEFRAMES, format_ms, parse_time


def add_data_arguments(parser: CommandParser) -> None:
    """The data and fill-rule arguments shared by backtest, sweep and walkforward."""
    src = parser.add_argument_group("data (either --data CSV or --exchange/--symbol from the database)")
    src.add_argument("--data", help="Candle CSV file (.csv or .csv.gz); needs --time-label and --timeframe")
    src.add_argument("--time-label", choices=["open", "close"], help="Which time the CSV's timestamp column holds")
    src.add_argument("--exchange", help="Exchange of the stored candles")
    src.add_argument("--symbol", help="Symbol of the stored candles, e.g. BTC/USDT")
    src.add_argument("--timeframe", help=f"One of {', '.join(TIMEFRAMES)}")
    src.add_argument("--start", help="First candle close time (ms UTC or ISO date), inclusive")
    src.add_argument("--end", help="Last candle close time (ms UTC or ISO date), inclusive")
    rules = parser.add_argument_group("fill rules")
    rules.add_argument("--fee", type=float, default=None, help="Fee per fill as a fraction (default 0.001)")
    rules.add_argument("--slippage", type=float, default=None)
    rules.add_argument("--initial-balance", type=float, default=None)
    rules.add_argument("--fraction", type=float, default=None, help="Share of cash spent per buy, (0, 1]")
    rules.add_argument("--stop-loss", type=float, default=None, help="e.g. 0.05 = exit 5%% below entry")
    rules.add_argument("--take-profit", type=float, default=None, help="e.g. 0.1 = exit 10%% above entry")


def bad(message: str) -> CommandError:
    """A usage error: one line, exit code 2."""
    return CommandError(" ".join(str(message).split()), returncode=2)


def parse_json_arg(value: str | None, name: str, *, default: Any = None) -> Any:
    if value is None:
        return default
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise bad(f"{name} is not valid JSON ({exc.msg} at column {exc.colno}): {value!r}")


def data_options(options: dict[str, Any]) -> dict[str, Any]:
    """Checked data arguments -> model/service keyword arguments (exchange, symbol, timeframe, data_file, ...)."""
    tf = options.get("timeframe")
    if not tf:
        raise bad("--timeframe is required")
    if tf not in TIMEFRAMES:
        raise bad(f"unknown timeframe {tf!r}: expected one of {', '.join(TIMEFRAMES)}")
    out: dict[str, Any] = {"timeframe": tf}
    if options.get("data"):
        if options.get("exchange") or options.get("symbol"):
            raise bad("use either --data or --exchange/--symbol, not both")
        if not options.get("time_label"):
            raise bad("--time-label open|close is required with --data (a file does not say which time it holds)")
        out.update(data_file=options["data"], time_label=options["time_label"])
    else:
        if not (options.get("exchange") and options.get("symbol")):
            raise bad("give --data CSV (with --time-label) or both --exchange and --symbol")
        out.update(exchange=options["exchange"], symbol=options["symbol"])
    for key in ("start", "end"):
        if options.get(key) is not None:
            try:
                out[key] = parse_time(str(options[key]))
            except ValueError as exc:
                raise bad(f"--{key}: {exc}")
    if out.get("start") is not None and out.get("end") is not None and out["end"] < out["start"]:
        raise bad(f"--end {out['end']} is before --start {out['start']}")
    return out


def rules_options(options: dict[str, Any]) -> dict[str, Any]:
    from django.conf import settings

    rules = {
        "fee": options.get("fee") if options.get("fee") is not None else settings.TRADEBOT_DEFAULT_FEE,
        "slippage": options.get("slippage"),
        "initial_balance": options.get("initial_balance"),
        "fraction": options.get("fraction"),
        "stop_loss": options.get("stop_loss"),
        "take_profit": options.get("take_profit"),
    }
    from apps.backtest import services

    try:
        services.build_rules(**rules)
    except services.BacktestInputError as exc:
        raise bad(str(exc))
    return rules


def model_rules(rules: dict[str, Any]) -> dict[str, Any]:
    """Rules for model fields: drop Nones of non-nullable fields so model defaults apply."""
    return {k: v for k, v in rules.items() if v is not None or k in ("stop_loss", "take_profit")}


def metrics_table(metrics: dict[str, Any]) -> str:
    width = max((len(k) for k in metrics), default=10)
    return "\n".join(f"  {k.ljust(width)}  {format_metric(k, v)}" for k, v in metrics.items())


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Command(BaseCommand):
    help = "Backtest one strategy over a CSV file or stored candles; prints metrics (or --json) and writes --report."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--strategy", required=True, help="Registered strategy name, e.g. sma_cross")
        parser.add_argument("--params", default=None, help='Strategy parameters as JSON, e.g. {"fast": 10}')
        add_data_arguments(parser)
        parser.add_argument("--json", action="store_true", help="Print ONE JSON object (metrics, trades, ...)")
        parser.add_argument("--report", help="Write a self-contained offline HTML report to this path")

    def handle(self, *args: Any, **options: Any) -> None:
        from apps.backtest import services

        params = parse_json_arg(options.get("params"), "--params", default={})
        if not isinstance(params, dict):
            raise bad(f"--params must be a JSON object, got {type(params).__name__}")
        data = data_options(options)
        rules = rules_options(options)
        try:
            services.build_strategy(options["strategy"], params)
        except services.BacktestInputError as exc:
            raise bad(str(exc))
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
            write_report(options["report"], title=title, df=df, result=payload)
        out = {k: payload[k] for k in ("metrics", "trades", "open_trade", "final_equity", "warnings")}
        if options.get("json"):
            self.stdout.write(json.dumps(out, allow_nan=False))
            return
        self._print_human(out, data, options)

    def _from_file(self, data: dict[str, Any], strategy: str, params: dict, rules: dict) -> tuple[dict, Any]:
        """No ORM on this path: the CSV is read, validated and backtested in memory."""
        from apps.backtest import services
        from apps.backtest.engine.sweep import jsonable

        loaded = services.load_csv_frame(data["data_file"], timeframe=data["timeframe"], time_label=data["time_label"],
                                         start=data.get("start"), end=data.get("end"))
        result = services.run_in_memory(loaded.df, strategy=strategy, parameters=params, timeframe=data["timeframe"],
                                        rules_kwargs=rules, extra_warnings=loaded.warnings)
        payload = jsonable(result.to_dict())
        payload["equity_curve"] = services._equity_curve(result, loaded.df, max_points=5000)
        return payload, loaded.df

    def _from_db(self, data: dict[str, Any], strategy: str, params: dict, rules: dict) -> tuple[dict, Any]:
        from apps.backtest import services
        from apps.backtest.models import Status

        run = services.create_run(strategy=strategy, parameters=params, enqueue=False, **data, **model_rules(rules))
        try:
            run = services.execute_run(run.pk)
        except Exception:  # noqa: BLE001 - stored on the run by execute_run; the command reports one line
            run.refresh_from_db()
        if run.status != Status.DONE:
            raise CommandError(f"backtest run #{run.pk} failed: {run.error}")
        self.stderr.write(f"stored as backtest run #{run.pk}")
        payload = {"metrics": run.metrics, "trades": run.trades, "open_trade": run.open_trade,
                   "final_equity": run.final_equity, "warnings": run.warnings, "equity_curve": run.equity_curve,
                   "parameters": run.parameters}
        df = services.load_data(run).df
        return payload, df

    def _print_human(self, out: dict[str, Any], data: dict[str, Any], options: dict[str, Any]) -> None:
        source = data.get("data_file") or f"{data.get('exchange')} {data.get('symbol')}"
        self.stdout.write(f"{options['strategy']} on {source} {data['timeframe']}")
        self.stdout.write(metrics_table(out["metrics"]))
        self.stdout.write(f"  closed trades: {len(out['trades'])}; final equity {format_value(out['final_equity'])}")
        if out["open_trade"]:
            ot = out["open_trade"]
            entry = ot.get("entry_time")
            when = format_ms(int(entry)) if isinstance(entry, int) else entry
            self.stdout.write(f"  open trade since {when} at {format_value(ot.get('entry_price'))}")
        for w in out["warnings"]:
            self.stdout.write(f"  warning: {w}")
        if options.get("report"):
            self.stdout.write(f"  report written to {options['report']}")
