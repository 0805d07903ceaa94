"""manage.py optimize: an Optuna search (TPE by default) over a strategy's parameters, trials evaluated as Celery
tasks on the `backtest` queue by however many workers run, resumable by study name (see apps/backtest/optimize.py).

On the embedded default (no REDIS_URL) the tasks run in-process; with workers, start them first
(`celery -A tradebot worker -Q backtest`). Bad input exits 2 with one line.

`--walk-forward --train T --test S [--step P]`: re-optimise per rolling window. Each train window gets its own
search of `--trials` trials (a child study `<name>/w<i>`, distributed and resumable like any study), and the best
set of each window is evaluated on the test window after it; the per-window report and the stitched out-of-sample
metrics are the `walkforward` command's (apps.backtest.engine.walkforward). `--folds K` instead scores every trial of
ONE search by its mean metric over K consecutive time folds.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import CommandError, CommandParser

from apps.backtest.management.cli import (
    add_data_arguments,
    add_output_arguments,
    add_search_arguments,
    add_window_arguments,
    data_options,
    json_object_arg,
    model_rules,
    rules_options,
    window_report_lines,
    window_sizes,
)
from apps.common.management import DomainCommand, one_line, usage_error


class Command(DomainCommand):
    help = "Optuna parameter search over Celery workers; a study with the same --study name continues."

    def add_arguments(self, parser: CommandParser) -> None:
        add_search_arguments(parser, metric_help="Metric to optimise (a leading '-' minimises)", top=5,
                             top_help="Trials shown in the final table")
        parser.add_argument("--space", required=True,
                            help='JSON: {"fast": [5, 50], "slow": {"min": 20, "max": 200, "step": 5}, '
                                 '"kind": {"choices": ["a", "b"]}, "other": 3}')
        parser.add_argument("--trials", type=int, required=True, help="Finished trials the study should reach")
        parser.add_argument("--study", help="Study name (default: strategy-market-metric); same name = resume")
        parser.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--batch", type=int, default=None,
                            help="Trials in flight at once (default: 2 x the workers answering ping, at least 2)")
        parser.add_argument("--walk-forward", action="store_true",
                            help="Re-optimise on each rolling train window (--train/--test/--step) and evaluate each "
                                 "window's best set out-of-sample on the test window after it")
        add_window_arguments(parser, required=False)
        parser.add_argument("--folds", type=int, default=1,
                            help="Score each trial by its mean metric over FOLDS consecutive time folds (default 1)")
        parser.add_argument("--storage", help="Optuna storage URL (default: the project's database)")
        parser.add_argument("--requeue-after", type=float, default=600.0,
                            help="Re-enqueue a trial pending this many seconds (a lost worker); default 600")
        add_output_arguments(parser)
        add_data_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from apps.backtest import optimize, services

        space = json_object_arg(options["space"], "--space", "{parameter: range | choices | value}")
        if options["trials"] < 1:
            raise usage_error(f"--trials must be >= 1, got {options['trials']}")
        metric = options["metric"]
        try:
            services.validate_metric(metric)
        except services.BacktestInputError as exc:
            raise usage_error(str(exc))
        data = data_options(options)
        rules = rules_options(options)
        market = data.get("data_file") or f"{data.get('exchange')}-{data.get('symbol')}"
        name = options.get("study") or f"{options['strategy']}-{market}-{data['timeframe']}-{metric}"
        if options["walk_forward"]:
            return self._walk_forward(options, name, space, data, rules)
        if options.get("train") or options.get("test") or options.get("step"):
            raise usage_error("--train/--test/--step need --walk-forward")
        try:
            row, ostudy, searched, fixed = optimize.open_study(
                name=name, strategy=options["strategy"], space=space, metric=metric, sampler=options["sampler"],
                seed=options["seed"], folds=options["folds"], storage=options.get("storage"), **data,
                **model_rules(rules))
        except services.BacktestInputError as exc:
            raise usage_error(str(exc))
        batch = options["batch"] or self._default_batch()
        bar = self._progress(options, name)
        t0 = time.perf_counter()
        try:
            study = optimize.run_study(row=row, ostudy=ostudy, searched=searched, fixed=fixed,
                                       n_trials=options["trials"], batch=max(1, batch),
                                       requeue_after=options["requeue_after"], progress=bar)
        except (OSError, ValueError) as exc:
            raise CommandError(one_line(exc))
        finally:
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - t0
        top = optimize.ranking(study, options["top"])
        counts = {s: study.trials.filter(state=s).count() for s in ("done", "failed")}
        if options["json"]:
            self.stdout.write(json.dumps({
                "study": study.name, "study_id": study.pk, "best_value": study.best_value,
                "best_parameters": study.best_parameters, "done": counts["done"], "failed": counts["failed"],
                "wall_seconds": wall, "top": [{"number": r["index"], "parameters": r["parameters"],
                                                "value": r["value"], "error": r["error"]} for r in top],
            }, allow_nan=False))
            return
        self.stdout.write(f"study {study.name} (#{study.pk}): {counts['done']} trials done, {counts['failed']} failed; "
                          f"{study.direction} {study.metric}; {wall:.1f}s")
        for r in top:
            value = "-" if r["value"] is None else f"{r['value']:.6g}"
            self.stdout.write(f"  #{r['index']:<5} {metric}={value:<12} {json.dumps(r['parameters'])}"
                              + (f"  ({r['error']})" if r["error"] else ""))

    def _walk_forward(self, options: dict[str, Any], name: str, space: dict, data: dict, rules: dict) -> None:
        from apps.backtest import optimize, services

        if not (options.get("train") and options.get("test")):
            raise usage_error("--walk-forward needs --train and --test (candles or durations like 30d)")
        sizes = window_sizes(options, data["timeframe"])
        try:
            row = optimize.open_walk_forward(
                name=name, strategy=options["strategy"], space=space, metric=options["metric"],
                sampler=options["sampler"], seed=options["seed"], folds=options["folds"], **sizes, **data,
                **model_rules(rules))
        except services.BacktestInputError as exc:
            raise usage_error(str(exc))
        bar = self._progress(options, name)
        t0 = time.perf_counter()
        try:
            study = optimize.run_walk_forward(row=row, n_trials=options["trials"],
                                              batch=max(1, options["batch"] or self._default_batch()),
                                              requeue_after=options["requeue_after"],
                                              storage=options.get("storage"), progress=bar)
        except services.BacktestInputError as exc:
            raise usage_error(str(exc))
        except (OSError, ValueError) as exc:
            raise CommandError(one_line(exc))
        finally:
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - t0
        report = study.walk_forward
        if options["json"]:
            self.stdout.write(json.dumps({"study": study.name, "study_id": study.pk, "wall_seconds": wall,
                                          "best_parameters": study.best_parameters, "best_value": study.best_value,
                                          **report}, allow_nan=False))
            return
        self.stdout.write(f"walk-forward study {study.name} (#{study.pk}): {len(report['windows'])} windows (train "
                          f"{report['train']}, test {report['test']} candles), {options['trials']} trials per "
                          f"window, {study.direction} {study.metric}; {wall:.1f}s")
        for line in window_report_lines(report, study.metric):
            self.stdout.write(line)
        self.stdout.write(f"  latest window's best (bots_from_study {study.pk}): "
                          f"{json.dumps(study.best_parameters)}")

    @staticmethod
    def _default_batch() -> int:
        from tradebot.celery import app

        if app.conf.task_always_eager:
            return 1
        try:
            stats = app.control.inspect(timeout=1.0).stats() or {}
        except Exception:  # noqa: BLE001 - no broker answer: a modest batch
            return 2
        procs = sum(int(s.get("pool", {}).get("max-concurrency", 1)) for s in stats.values())
        return max(2, 2 * procs)

    def _progress(self, options: dict[str, Any], name: str):
        from apps.common.progress import progress_bar

        bar = progress_bar(options["trials"], f"optimize {name}", quiet=options["quiet"] or options["json"],
                           unit="trial")
        if bar is None:
            return None

        class Progress:
            def __call__(self, done: int, total: int) -> None:
                bar.total = total  # a walk-forward knows its windows x trials once the data is loaded
                bar.n = done
                bar.refresh()

            def close(self) -> None:
                bar.close()

        return Progress()
