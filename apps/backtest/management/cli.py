"""Helpers shared by the backtest, sweep and walkforward commands: the data and fill-rule arguments, their checking,
JSON arguments and output formatting. Usage errors are one line with exit code 2 (apps.common.management)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from apps.backtest.formatting import format_metric, format_value
from apps.common.management import one_line, usage_error
from apps.market.timeframes import TIMEFRAMES, parse_time

__all__ = ["add_data_arguments", "bad", "data_options", "format_value", "metrics_table",
           "model_rules", "one_line", "parse_json_arg", "rules_options"]


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
    rules.add_argument("--fee", type=float, default=None,
                       help="Fee per fill as a fraction (default settings.TRADEBOT_DEFAULT_FEE, 0.001)")
    rules.add_argument("--slippage", type=float, default=None)
    rules.add_argument("--initial-balance", type=float, default=None)
    rules.add_argument("--fraction", type=float, default=None, help="Share of cash spent per buy, (0, 1]")
    rules.add_argument("--stop-loss", type=float, default=None, help="e.g. 0.05 = exit 5%% below entry")
    rules.add_argument("--take-profit", type=float, default=None, help="e.g. 0.1 = exit 10%% above entry")


def bad(message: str) -> CommandError:
    """A usage error: one line, exit code 2."""
    return usage_error(message)


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
