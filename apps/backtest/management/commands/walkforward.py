"""manage.py walkforward: rolling train/test windows; best grid parameters in-sample, evaluated out-of-sample.

--train/--test/--step are candle counts or durations (30d, 12h). With --data nothing touches the database; with
--exchange/--symbol the study is stored as a WalkForward row.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from apps.backtest.formatting import format_count
from apps.backtest.management.cli import (
    add_data_arguments,
    add_output_arguments,
    add_search_arguments,
    add_window_arguments,
    data_options,
    json_object_arg,
    model_rules,
    one_line,
    rules_options,
    window_report_lines,
    window_sizes,
)
from apps.common.management import DomainCommand, usage_error
from tradebot import memory


class Command(DomainCommand):
    help = "Walk-forward analysis of a strategy over a parameter grid (in-sample vs out-of-sample per window)."

    def add_arguments(self, parser: CommandParser) -> None:
        add_search_arguments(parser, metric_help="Metric choosing each window's best set ('-name': lowest)")
        parser.add_argument("--grid", required=True, help='{"fast": [5, 10], "slow": [50, 100]}')
        add_data_arguments(parser)
        add_window_arguments(parser, required=True)
        add_output_arguments(parser)
        parser.add_argument("--report", help="Write an offline HTML report (in-sample vs out-of-sample) to this path")

    def handle(self, *args: Any, **options: Any) -> None:
        memory.tune_allocator()  # a compute process: tuned where it starts (tradebot.memory), never by the engine
        from apps.backtest import services
        grid = json_object_arg(options["grid"], "--grid", "{parameter: [values]}")
        data = data_options(options)
        rules = rules_options(options)
        sizes = window_sizes(options, data["timeframe"])
        try:
            services.plan_param_sets(options["strategy"], grid=grid)
        except services.BacktestInputError as exc:
            raise usage_error(str(exc))
        from apps.common.progress import progress_bar

        bar = progress_bar(None, f"walk-forward {options['strategy']}", quiet=options.get("quiet") or
                           options.get("json"), unit="window")

        def on_window(done: int, total: int) -> None:
            if bar is not None:
                bar.total = total
                bar.n = done
                bar.refresh()

        try:
            if data.get("data_file"):
                loaded = services.load_csv_frame(data["data_file"], timeframe=data["timeframe"],
                                                 time_label=data["time_label"], start=data.get("start"),
                                                 end=data.get("end"))
                out = services.run_walkforward_in_process(options["strategy"], grid, loaded.df,
                                                          timeframe=data["timeframe"], rules_kwargs=rules,
                                                          metric=options["metric"], on_window=on_window,
                                                          **sizes)
                out["warnings"] = services.merge_warnings(loaded.warnings, out["warnings"])
                title = f"Walk-forward: {options['strategy']} on {data['data_file']} {data['timeframe']}"
            else:
                study = services.create_and_run_walkforward(strategy=options["strategy"], grid=grid,
                                                            metric=options["metric"], on_window=on_window,
                                                            **sizes, **data,
                                                            **model_rules(rules))
                self.stderr.write(f"stored as walk-forward #{study.pk}")
                out = {"windows": study.windows, "stitched_metrics": study.stitched_metrics,
                       "stitched_equity": study.stitched_equity,
                       "warnings": [w for w in study.error.split("; ") if w]}
                title = f"Walk-forward #{study.pk}: {options['strategy']} on {study.market_label}"
        except services.BacktestInputError as exc:
            raise usage_error(str(exc))
        except (OSError, ValueError) as exc:
            raise CommandError(one_line(exc))
        if bar is not None:
            bar.close()
        if options.get("report"):
            from apps.backtest.report import write_walkforward_report

            extra = [f"train {format_count(sizes['train'])}, test {format_count(sizes['test'])} candles; grid "
                     f"{json.dumps(grid)}"]
            write_walkforward_report(options["report"], title=title, result=out, metric=options["metric"],
                                     extra=extra)
            self.stderr.write(f"report written to {options['report']}")
        if options.get("json"):
            self.stdout.write(json.dumps(out, allow_nan=False))
            return
        metric = options["metric"].lstrip("-")
        self.stdout.write(f"walk-forward {options['strategy']}: {len(out['windows'])} windows "
                          f"(train {sizes['train']}, test {sizes['test']} candles), metric {metric}")
        for line in window_report_lines(out, metric):
            self.stdout.write(line)
