"""manage.py sweep: many parameter sets of one strategy through Celery (a chord of chunks), ranked by a metric.

Eager on the embedded default (the whole sweep runs in this process); on a real broker the chord is dispatched to the
`backtest` workers, and with --wait the command follows progress until the sweep is done.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import CommandError, CommandParser

from apps.backtest.formatting import format_metric
from apps.backtest.management.cli import (
    add_data_arguments,
    add_detail_argument,
    add_output_arguments,
    add_search_arguments,
    data_options,
    json_object_arg,
    model_rules,
    rules_options,
)
from apps.common.management import DomainCommand, usage_error
from tradebot import memory


class Command(DomainCommand):
    help = "Run a parameter sweep (--grid JSON or --random N [--space JSON]) over Celery workers and rank it."

    def add_arguments(self, parser: CommandParser) -> None:
        add_search_arguments(parser, metric_help="Metric to rank by (descending; '-name' ascending)", top=10,
                             top_help="How many of the best to keep and print")
        space = parser.add_mutually_exclusive_group(required=True)
        space.add_argument("--grid", help='{"fast": [5, 10], "slow": [50, 100]}: every combination')
        space.add_argument("--random", type=int, help="Number of random parameter sets")
        parser.add_argument("--space", help='Ranges for --random, e.g. {"fast": [5, 50], "slow": {"min": 60}}')
        parser.add_argument("--seed", type=int, default=None, help="Seed of --random (reproducible samples)")
        add_data_arguments(parser)
        add_detail_argument(parser)
        parser.add_argument("--chunk-size", type=int, default=25, help="Parameter sets per Celery task")
        parser.add_argument("--wait", action="store_true", help="Wait for the workers, printing progress")
        parser.add_argument("--timeout", type=float, default=3600.0, help="Give up waiting after this many seconds")
        add_output_arguments(parser)
        parser.add_argument("--report", help="Write an offline HTML report (ranking + heat map) to this path")
        parser.add_argument("--heatmap", default=None,
                            help="Two parameters for the report's heat map, e.g. fast,slow (default: the first two "
                                 "that vary)")

    def handle(self, *args: Any, **options: Any) -> None:
        memory.tune_allocator()  # a compute process: tuned where it starts (tradebot.memory), never by the engine
        from apps.backtest import services
        from apps.backtest.models import Status, Sweep

        grid = json_object_arg(options.get("grid"), "--grid", "{parameter: [values]}")
        space = json_object_arg(options.get("space"), "--space", "{parameter: [min, max]}")
        if options.get("random") is not None and options["random"] <= 0:
            raise usage_error(f"--random must be positive, got {options['random']}")
        if options["chunk_size"] <= 0:
            raise usage_error(f"--chunk-size must be positive, got {options['chunk_size']}")
        if options["top"] <= 0:
            raise usage_error(f"--top must be positive, got {options['top']}")
        heatmap = self._heatmap(options.get("heatmap"), options["strategy"])
        data = data_options(options)
        rules = rules_options(options)
        if data.get("data_file"):
            from pathlib import Path

            data["data_file"] = str(Path(data["data_file"]).resolve())  # workers may run elsewhere on this host
        try:
            sweep = services.create_sweep(
                strategy=options["strategy"], grid=grid, n_random=options.get("random"), space=space,
                seed=options.get("seed"), metric=options["metric"], top_k=options["top"],
                chunk_size=options["chunk_size"], detail=options.get("detail") or "", **data, **model_rules(rules),
            )
        except services.BacktestInputError as exc:
            raise usage_error(str(exc))
        # on_commit callbacks fire immediately in autocommit mode: the chord is dispatched (or ran eagerly) by now.
        sweep.refresh_from_db()
        if sweep.status not in (Status.DONE, Status.FAILED) and options.get("wait"):
            sweep = self._wait(sweep.pk, options["timeout"], quiet=options.get("json", False),
                               bar_off=options.get("quiet", False) or options.get("json", False))
        sweep = Sweep.objects.get(pk=sweep.pk)
        self._output(sweep, options)
        if sweep.status == Status.FAILED:
            raise CommandError(f"sweep #{sweep.pk} failed: {sweep.error}")
        if options.get("report"):
            self._report(sweep, options["report"], heatmap)

    @staticmethod
    def _heatmap(value: str | None, strategy: str) -> tuple[str | None, str | None]:
        """--heatmap x,y checked before the sweep runs: two different parameters of the strategy."""
        from apps.backtest import services

        if value is None:
            return None, None
        names = [v.strip() for v in value.split(",")]
        if len(names) != 2 or not all(names) or names[0] == names[1]:
            raise usage_error(f"--heatmap must name two different parameters like fast,slow, got {value!r}")
        try:
            known = [p.name for p in services.resolve_strategy(strategy).param_space()]
        except services.BacktestInputError as exc:
            raise usage_error(str(exc))
        for name in names:
            if name not in known:
                raise usage_error(f"--heatmap: heat-map parameter {name!r} is not a parameter of {strategy} "
                                  f"(expected one of {', '.join(known)})")
        return names[0], names[1]

    def _report(self, sweep, path: str, heatmap: tuple[str | None, str | None]) -> None:
        from apps.backtest.models import Status
        from apps.backtest.report import ReportError, write_sweep_report

        if sweep.status != Status.DONE:
            raise CommandError(f"sweep #{sweep.pk} is {sweep.status}: no report written (use --wait)")
        try:
            write_sweep_report(path, sweep, x=heatmap[0], y=heatmap[1])
        except ReportError as exc:
            raise usage_error(str(exc))
        self.stderr.write(f"report written to {path}")

    def _wait(self, sweep_id: int, timeout: float, *, quiet: bool, bar_off: bool = False):
        from apps.backtest.models import Status, Sweep
        from apps.common.progress import progress_bar

        deadline = time.monotonic() + timeout
        last = None
        first = Sweep.objects.get(pk=sweep_id)
        bar = progress_bar(first.total, f"sweep #{sweep_id}", quiet=bar_off, unit="set")
        while True:
            sweep = Sweep.objects.get(pk=sweep_id)
            state = (sweep.completed, sweep.status)
            if bar is not None and state != last:
                bar.n = sweep.completed
                bar.set_postfix(failed=sweep.failed, status=sweep.status)
                last = state
                if sweep.status in (Status.DONE, Status.FAILED):
                    bar.close()
            if state != last:
                self.stderr.write(f"sweep #{sweep.pk}: {sweep.completed}/{sweep.total} done, {sweep.failed} failed "
                                  f"({sweep.status})")
                last = state
            if sweep.status in (Status.DONE, Status.FAILED):
                return sweep
            if time.monotonic() > deadline:
                if bar is not None:
                    bar.close()
                raise CommandError(f"sweep #{sweep_id} still {sweep.status} after {timeout:.0f}s "
                                   f"({sweep.completed}/{sweep.total}); are `backtest` workers running?")
            time.sleep(0.5)

    def _output(self, sweep, options: dict[str, Any]) -> None:
        from apps.backtest import selectors

        payload = {
            "sweep_id": sweep.pk,
            "strategy": sweep.strategy,
            "status": sweep.status,
            "metric": sweep.metric,
            "total": sweep.total,
            "completed": sweep.completed,
            "failed": sweep.failed,
            "compute_seconds": selectors.sweep_compute_seconds(sweep.pk),
            "ranking": sweep.ranking,
            "failures": [{"index": r.index, "parameters": r.parameters, "error": r.error}
                         for r in sweep.results.exclude(error="").order_by("index")[:50]],
        }
        if options.get("json"):
            self.stdout.write(json.dumps(payload, allow_nan=False))
            return
        self.stdout.write(f"sweep #{sweep.pk} {sweep.strategy} on {sweep.market_label}: {sweep.status}, "
                          f"{sweep.completed}/{sweep.total} evaluated, {sweep.failed} failed")
        if sweep.status != "done":
            self.stdout.write("  (still running: see the admin, the API or `manage.py sweep ... --wait`)")
            return
        self.stdout.write(f"  top {len(sweep.ranking)} by {sweep.metric}:")
        for row in sweep.ranking:
            metrics = row.get("metrics") or {}
            extra = ", ".join(f"{k}={format_metric(k, metrics.get(k))}"
                              for k in ("total_return_pct", "max_drawdown_pct", "closed_trades") if k in metrics)
            self.stdout.write(f"  #{row['rank']:<3} {json.dumps(row['parameters'])}  "
                              f"{sweep.metric}={format_metric(sweep.metric, row['value'])}  {extra}")
            det = row.get("detail")
            if det:
                self.stdout.write(f"       detail {det['source']}: {det['ambiguous_exits']} ambiguous exits on "
                                  f"candles alone, {det['changed']} changed by the detail, {det['missing']} without "
                                  "detail data")
                for w in det.get("warnings", [])[:5]:
                    self.stdout.write(f"       warning: {w}")
        for f in payload["failures"][:10]:
            self.stdout.write(f"  failed [{f['index']}] {json.dumps(f['parameters'])}: {f['error']}")
