"""Helpers shared by the research commands (backtest, sweep, walkforward, optimize, check_strategy): the data,
fill-rule, search and walk-forward arguments and their checking, JSON arguments, output formatting; and the one
command shape of bots_from_sweep / bots_from_study (`BotsFromResearchCommand`). One copy of each argument, so the
commands cannot drift apart. Usage errors are `apps.common.management.usage_error` (one line, exit code 2)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandParser

from apps.backtest.formatting import format_metric, format_time, format_value
from apps.common.management import DomainCommand, one_line, usage_error
from apps.market.timeframes import TIMEFRAMES, parse_time

__all__ = ["BotsFromResearchCommand", "add_data_arguments", "add_detail_argument", "add_output_arguments",
           "add_search_arguments", "add_source_arguments", "add_window_arguments", "data_options", "format_value",
           "json_object_arg", "metrics_table", "model_rules", "one_line", "parse_json_arg", "rules_options",
           "window_report_lines", "window_sizes"]


def add_source_arguments(parser: CommandParser) -> None:
    """Where the candles come from: --data CSV (+ --time-label) or --exchange/--symbol; --timeframe, --start/--end."""
    src = parser.add_argument_group("data (either --data CSV or --exchange/--symbol from the database)")
    src.add_argument("--data", help="Candle CSV file (.csv or .csv.gz); needs --time-label and --timeframe")
    src.add_argument("--time-label", choices=["open", "close"], help="Which time the CSV's timestamp column holds")
    src.add_argument("--exchange", help="Exchange of the stored candles")
    src.add_argument("--symbol", help="Symbol of the stored candles, e.g. BTC/USDT")
    src.add_argument("--timeframe", help=f"One of {', '.join(TIMEFRAMES)}")
    src.add_argument("--start", help="First candle close time (ms UTC or ISO date), inclusive")
    src.add_argument("--end", help="Last candle close time (ms UTC or ISO date), inclusive")


def add_data_arguments(parser: CommandParser) -> None:
    """The data and fill-rule arguments shared by backtest, sweep, walkforward and optimize."""
    add_source_arguments(parser)
    rules = parser.add_argument_group("fill rules")
    rules.add_argument("--fee", type=float, default=None,
                       help="Fee per fill as a fraction (default settings.TRADEBOT_DEFAULT_FEE, 0.001)")
    rules.add_argument("--slippage", type=float, default=None)
    rules.add_argument("--initial-balance", type=float, default=None)
    rules.add_argument("--fraction", type=float, default=None, help="Share of cash spent per buy, (0, 1]")
    rules.add_argument("--stop-loss", type=float, default=None, help="e.g. 0.05 = exit 5%% below entry")
    rules.add_argument("--take-profit", type=float, default=None, help="e.g. 0.1 = exit 10%% above entry")


def add_detail_argument(parser: CommandParser) -> None:
    """--detail 1m|trades (backtest, sweep): stop-loss/take-profit candles resolved on finer stored data."""
    parser.add_argument("--detail", choices=["1m", "trades"],
                        help="Resolve stop-loss/take-profit candles whose outcome depends on the path inside them "
                             "on the stored 1m candles or raw trades of that candle (read for those candles only)")


def add_search_arguments(parser: CommandParser, *, metric_help: str, top: int | None = None,
                         top_help: str = "") -> None:
    """The arguments of every parameter search (sweep, walkforward, optimize): --strategy, --metric (and --top
    when the command prints a ranking)."""
    parser.add_argument("--strategy", required=True, help="Registered strategy name, e.g. sma_cross")
    parser.add_argument("--metric", default="sharpe", help=metric_help)
    if top is not None:
        parser.add_argument("--top", type=int, default=top, help=top_help)


def add_output_arguments(parser: CommandParser) -> None:
    """--json (one JSON object on stdout) and --quiet (no progress bar; also off when stderr is no TTY)."""
    parser.add_argument("--json", action="store_true", help="Print ONE JSON object")
    parser.add_argument("--quiet", action="store_true", help="No progress bar (also off when stderr is no TTY)")


def add_window_arguments(parser: CommandParser, *, required: bool) -> None:
    """Walk-forward windows (walkforward, optimize --walk-forward): candle counts or durations (30d, 12h)."""
    parser.add_argument("--train", required=required, default=None,
                        help="Train window: candles (e.g. 5000) or a duration (7d)")
    parser.add_argument("--test", required=required, default=None, help="Test window: candles or a duration")
    parser.add_argument("--step", default=None, help="Distance between windows (default: the test size)")


def window_sizes(options: dict[str, Any], timeframe: str) -> dict[str, int | None]:
    """{train, test, step} as candle counts (step None = the test size); a bad size is a usage error."""
    from apps.backtest.engine import walkforward as wf

    try:
        sizes: dict[str, int | None] = {k: wf.to_candles(options[k], timeframe, what=f"--{k}")
                                        for k in ("train", "test")}
        sizes["step"] = None if options.get("step") is None else wf.to_candles(options["step"], timeframe,
                                                                              what="--step")
    except wf.WalkForwardError as exc:
        raise usage_error(str(exc)) from None
    return sizes


def json_object_arg(value: str | None, name: str, shape: str) -> dict[str, Any] | None:
    """A JSON object argument (None when absent); anything else is a usage error naming the expected `shape`."""
    parsed = parse_json_arg(value, name)
    if parsed is not None and not isinstance(parsed, dict):
        raise usage_error(f"{name} must be a JSON object {shape}, got {type(parsed).__name__}")
    return parsed


def parse_json_arg(value: str | None, name: str, *, default: Any = None) -> Any:
    if value is None:
        return default
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise usage_error(f"{name} is not valid JSON ({exc.msg} at column {exc.colno}): {value!r}")


def data_options(options: dict[str, Any]) -> dict[str, Any]:
    """Checked data arguments -> model/service keyword arguments (exchange, symbol, timeframe, data_file, ...)."""
    tf = options.get("timeframe")
    if not tf:
        raise usage_error("--timeframe is required")
    if tf not in TIMEFRAMES:
        raise usage_error(f"unknown timeframe {tf!r}: expected one of {', '.join(TIMEFRAMES)}")
    out: dict[str, Any] = {"timeframe": tf}
    if options.get("data"):
        if options.get("exchange") or options.get("symbol"):
            raise usage_error("use either --data or --exchange/--symbol, not both")
        if not options.get("time_label"):
            raise usage_error("--time-label open|close is required with --data (a file does not say which time it "
                              "holds)")
        out.update(data_file=options["data"], time_label=options["time_label"])
    else:
        if not (options.get("exchange") and options.get("symbol")):
            raise usage_error("give --data CSV (with --time-label) or both --exchange and --symbol")
        out.update(exchange=options["exchange"], symbol=options["symbol"])
    for key in ("start", "end"):
        if options.get(key) is not None:
            try:
                out[key] = parse_time(str(options[key]))
            except ValueError as exc:
                raise usage_error(f"--{key}: {exc}")
    if out.get("start") is not None and out.get("end") is not None and out["end"] < out["start"]:
        raise usage_error(f"--end {out['end']} is before --start {out['start']}")
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
        raise usage_error(str(exc))
    return rules


def model_rules(rules: dict[str, Any]) -> dict[str, Any]:
    """Rules for model fields: drop Nones of non-nullable fields so model defaults apply."""
    return {k: v for k, v in rules.items() if v is not None or k in ("stop_loss", "take_profit")}


def metrics_table(metrics: dict[str, Any]) -> str:
    width = max((len(k) for k in metrics), default=10)
    return "\n".join(f"  {k.ljust(width)}  {format_metric(k, v)}" for k, v in metrics.items())


def window_report_lines(out: dict[str, Any], metric: str) -> list[str]:
    """The per-window lines of a walk-forward result (walkforward, optimize --walk-forward): dates as `backtest`
    prints them, the chosen set, in-sample and out-of-sample metric; then the stitched out-of-sample metrics."""
    metric = metric.lstrip("-")
    lines = []
    for w in out["windows"]:
        ins = (w.get("in_sample") or {}).get(metric)
        oos = (w.get("out_of_sample") or {}).get(metric)
        dates = ""
        if all(isinstance(w.get(k), int) for k in ("train_start", "test_start", "test_end")):
            dates = (f" train {format_time(w['train_start'])} .. test {format_time(w['test_start'])} - "
                     f"{format_time(w['test_end'])}")
        search = f" ({w['trials']} trials, {w['study']})" if w.get("study") else ""
        lines.append(f"  window {w['index']}:{dates}  {json.dumps(w['parameters'])}  in-sample "
                     f"{format_metric(metric, ins)}  out-of-sample {format_metric(metric, oos)}{search}")
    lines.append("  stitched out-of-sample:")
    lines += [f"    {k}: {format_metric(k, v)}" for k, v in out["stitched_metrics"].items()]
    lines += [f"  warning: {w}" for w in out["warnings"]]
    return lines


class BotsFromResearchCommand(DomainCommand):
    """`manage.py bots_from_<research> ID --top K [--start]`: a research row's K best parameter sets become paper
    bots, one line per bot. A subclass names its id argument and its service (`make_bots`); domain errors (no such
    row, a file row, nothing ranked yet, a bad parameter) are one line with exit 2 (DomainCommand)."""

    id_argument: str  # "sweep_id", "study_id"
    top_help: str

    def make_bots(self, pk: int, *, top: int, start: bool) -> list:
        raise NotImplementedError

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(self.id_argument, type=int)
        parser.add_argument("--top", type=int, required=True, help=self.top_help)
        parser.add_argument("--start", action="store_true", help="Start them (trading from the next closed candle)")

    def handle(self, *args: Any, **options: Any) -> None:
        for bot in self.make_bots(options[self.id_argument], top=options["top"], start=options["start"]):
            self.stdout.write(f"{bot.name}: {bot.strategy} {bot.parameters} on {bot.exchange} {bot.symbol} "
                              f"{bot.timeframe}, {bot.status}")
