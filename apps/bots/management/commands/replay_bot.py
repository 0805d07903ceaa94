"""manage.py replay_bot --config PATH (--data CSV --time-label open|close --timeframe TF | --exchange EX --symbol SYM)
[--start ms] [--end ms] [--batch N] [--detail 1m|trades [--detail-data 1m.csv]] [--json]

Feeds the candles through the real tick core (apps.bots.trading.fleet.decide_fleet, the one the fleet shards run), N
new candles per tick (default 1: as a live market delivers them), from a fresh portfolio whose indicators start at the
first candle, so the result equals `backtest` of the same config over the same candles. `--data` needs no database;
nothing is written either way. `--json`: one object {"trades": [...backtest --json fields...], "open_trade": ...,
"final_equity": X, "signals": N} (+ "detail" and "warnings" with --detail).

`--detail 1m|trades`: each tick resolves stop-loss/take-profit exits on ambiguous candles on the stored 1m candles or
raw trades of that candle (or a 1m CSV, --detail-data), the rule of `backtest --detail`, so the replay still equals
the backtest of the same config with the same --detail.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from apps.common.management import DomainCommand, usage_error
from apps.market.timeframes import TIMEFRAMES, parse_time


def load_candles(options: dict[str, Any], timeframe: str):
    """The candle frame of the options (CSV or database), clipped to --start/--end, validated."""

    from apps.market.validation import clip_close_times, validate_candles

    start = parse_time(str(options["start"])) if options.get("start") is not None else None
    end = parse_time(str(options["end"])) if options.get("end") is not None else None
    if options.get("data"):
        from apps.market.csvio import read_candle_csv

        if options.get("exchange") or options.get("symbol"):
            raise usage_error("use either --data or --exchange/--symbol, not both")
        if not options.get("time_label"):
            raise usage_error("--time-label open|close is required with --data")
        try:
            df = read_candle_csv(options["data"], timeframe=timeframe, time_label=options["time_label"])
        except (OSError, ValueError) as exc:
            raise CommandError(" ".join(str(exc).split()), returncode=1) from None
        label = str(options["data"])
    else:
        from apps.market.selectors import candle_frame

        if not (options.get("exchange") and options.get("symbol")):
            raise usage_error("give --data CSV (with --time-label and --timeframe) or both --exchange and --symbol")
        df = candle_frame(exchange=options["exchange"], symbol=options["symbol"], timeframe=timeframe)
        label = f"{options['exchange']} {options['symbol']}"
    valid, _ = validate_candles(clip_close_times(df, start, end), market=label, timeframe=timeframe)
    return valid.reset_index(drop=True)


class Command(DomainCommand):
    help = "Replay one bot config over candles (CSV or stored) through the tick core; prints its trades."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--config", required=True, help="A bot config JSON file (config/bots/*.json form)")
        parser.add_argument("--data", help="Candle CSV (.csv or .csv.gz); needs --time-label and --timeframe")
        parser.add_argument("--time-label", choices=["open", "close"])
        parser.add_argument("--timeframe", help=f"One of {', '.join(TIMEFRAMES)} (default: the config's)")
        parser.add_argument("--exchange")
        parser.add_argument("--symbol")
        parser.add_argument("--start", help="First candle close time (ms UTC or ISO date), inclusive")
        parser.add_argument("--end", help="Last candle close time (ms UTC or ISO date), inclusive")
        parser.add_argument("--batch", type=int, default=1, help="New candles per tick (default 1)")
        parser.add_argument("--detail", choices=["1m", "trades"],
                            help="Resolve stop-loss/take-profit candles whose outcome depends on the path inside them "
                                 "on the stored 1m candles or raw trades of that candle (as backtest --detail)")
        parser.add_argument("--detail-data", help="With --data: a 1m candle CSV (same --time-label) for --detail 1m")
        parser.add_argument("--json", action="store_true", help="Print ONE JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        from apps.bots.config import BotConfigError, load_config_file
        from apps.bots.trading.candles import CandleArrays
        from apps.bots.trading.fills import FillRules
        from apps.bots.trading.fleet import BotTick, replay, round_trips

        try:
            config = load_config_file(Path(options["config"]))
        except BotConfigError as exc:
            raise usage_error(str(exc))
        timeframe = options.get("timeframe") or config.timeframe
        if timeframe not in TIMEFRAMES:
            raise usage_error(f"unknown timeframe {timeframe!r}: expected one of {', '.join(TIMEFRAMES)}")
        if options["batch"] < 1:
            raise usage_error(f"--batch must be >= 1, got {options['batch']}")
        try:
            frame = load_candles(options, timeframe)
        except ValueError as exc:
            raise usage_error(str(exc))
        candles = CandleArrays.from_frame(frame)
        detail = self._detail(options, candles, timeframe)
        rules = FillRules(fee=config.fee_rate, slippage=config.slippage, fraction=config.fraction,
                          stop_loss=config.stop_loss, take_profit=config.take_profit,
                          initial_balance=config.initial_balance)
        first = int(candles.timestamp[0]) if len(candles) else 0
        bot = BotTick.fresh(0, config.strategy, config.parameters, rules, history_start=first)
        counts: dict[str, Any] = {}
        try:
            state, fills, decided = replay(candles, bot, batch=options["batch"], detail=detail,
                                           detail_counts=counts)
        except RuntimeError as exc:
            raise CommandError(f"{config.name}: {exc}", returncode=1) from None
        last_time = int(candles.timestamp[-1]) if len(candles) else None
        last_price = float(candles.close[-1]) if len(candles) else None
        trades, open_trade = round_trips(fills, last_time, last_price, candles.timestamp)
        final_equity = state.cash + state.amount * last_price if last_price is not None else state.cash
        payload = {"trades": trades, "open_trade": open_trade, "final_equity": final_equity, "signals": decided}
        if detail is not None:
            from apps.bots.trading.detail import detail_warnings

            payload["detail"] = {"source": detail[0], "ambiguous_exits": counts.get("ambiguous_exits", 0),
                                 "changed": counts.get("changed", 0), "missing": len(counts.get("missing", [])),
                                 "untouched": len(counts.get("untouched", []))}
            payload["warnings"] = detail_warnings(detail[0], counts.get("missing", []), counts.get("untouched", []))
        if options["json"]:
            self.stdout.write(json.dumps(payload))
            return
        self.stdout.write(f"{config.name}: {decided} candles decided, {len(trades)} closed trades, "
                          f"{'an open position' if open_trade else 'flat'} at the end, final equity "
                          f"{final_equity:,.2f}")
        det = payload.get("detail")
        if det:
            self.stdout.write(f"  detail {det['source']}: {det['ambiguous_exits']} ambiguous exits on candles alone, "
                              f"{det['changed']} changed by the detail, {det['missing']} without detail data")
        for w in payload.get("warnings", []):
            self.stdout.write(f"  warning: {w}")
        for t in trades:
            self.stdout.write(f"  {t['entry_time']} -> {t['exit_time']} {t['exit_reason']}: pnl {t['pnl']:,.2f} "
                              f"({t['return_pct']:.2f}%)")

    @staticmethod
    def _detail(options: dict[str, Any], candles, timeframe: str):
        """(kind, DetailSource over the replayed candles) for --detail, None without; bad combinations exit 2."""
        kind = options.get("detail")
        if options.get("detail_data") and kind != "1m":
            raise usage_error("--detail-data needs --detail 1m")
        if not kind:
            return None
        from apps.market.timeframes import timeframe_ms

        if options.get("data"):
            if kind != "1m" or not options.get("detail_data"):
                raise usage_error("--detail with --data needs --detail 1m --detail-data FILE (1m candles); "
                                  "trades detail reads stored raw trades: use --exchange/--symbol")
            from apps.bots.trading.detail import frame_detail_source
            from apps.market.csvio import read_candle_csv

            try:
                fine = read_candle_csv(options["detail_data"], timeframe="1m", time_label=options["time_label"])
            except (OSError, ValueError) as exc:
                raise CommandError(" ".join(str(exc).split()), returncode=1) from None
            cols = tuple(fine[c].to_numpy(dtype="float64") for c in ("open", "high", "low", "close"))
            return kind, frame_detail_source("1m", fine["timestamp"].to_numpy(dtype="int64"), cols,
                                             candles.timestamp, timeframe_ms(timeframe))
        from apps.bots.selectors import stored_detail_source

        return kind, stored_detail_source(kind, exchange=options["exchange"], symbol=options["symbol"],
                                          candle_ts=candles.timestamp, timeframe=timeframe)
