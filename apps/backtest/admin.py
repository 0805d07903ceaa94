"""Admin: runs, sweeps (live progress), sweep results and walk-forward studies. Derived fields are read-only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.utils.html import format_html

from apps.backtest import services
from apps.backtest.models import BacktestRun, Status, Study, StudyTrial, Sweep, SweepResult, WalkForward
from apps.bots.models import Bot
from apps.common.errors import ApplicationError


def neighbourhood_grid(parameters: dict) -> dict:
    """A small grid around a run's numeric parameters (x0.5, x1, x1.5; integers stay integers, >= 1)."""
    grid = {}
    for name, value in (parameters or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            grid[name] = [value]
        elif isinstance(value, int):
            grid[name] = sorted({max(1, round(value * f)) for f in (0.5, 1.0, 1.5)})
        else:
            grid[name] = sorted({value * f for f in (0.5, 1.0, 1.5)})
    return grid


def report_bots_made(modeladmin, request, rows, label: Callable[[Any], str], make: Callable[[Any], list]) -> None:
    """The "best into bots" actions (sweeps, studies): `make(row)` per selected row, one message each: the bots made,
    or the domain error (a file row, nothing ranked yet)."""
    for row in rows:
        try:
            bots = make(row)
        except ApplicationError as exc:
            modeladmin.message_user(request, f"{label(row)}: {exc}", level=messages.ERROR)
            continue
        modeladmin.message_user(request, f"{label(row)}: {len(bots)} bot(s): {', '.join(b.name for b in bots)}")


@admin.register(BacktestRun)
class BacktestRunAdmin(admin.ModelAdmin):
    list_display = ("id", "strategy", "parameters", "market", "status", "progress", "sharpe", "total_return",
                    "final_equity", "created_at", "duration", "report")
    list_filter = ("status", "strategy", "timeframe", "exchange", "symbol")
    search_fields = ("strategy", "symbol", "exchange", "data_file")
    actions = ("sweep_around_run",)
    readonly_fields = ("status", "progress", "metrics", "trades", "open_trade", "final_equity", "equity_curve",
                       "warnings", "error", "sweep", "created_at", "started_at", "finished_at", "duration")
    date_hierarchy = "created_at"

    @admin.display(description="market")
    def market(self, obj):
        return obj.market_label

    @admin.display(description="sharpe")
    def sharpe(self, obj):
        return (obj.metrics or {}).get("sharpe")

    @admin.display(description="return %")
    def total_return(self, obj):
        return (obj.metrics or {}).get("total_return_pct")

    @admin.display(description="report")
    def report(self, obj):
        if obj.status != Status.DONE:
            return "-"
        return format_html('<a href="/dashboard/runs/{}/">dashboard</a> · <a href="/api/v1/backtest/runs/{}/report/">'
                           'HTML report</a>', obj.pk, obj.pk)

    @admin.action(description="Launch a sweep around the selected runs' parameters (x0.5, x1, x1.5)")
    def sweep_around_run(self, request, queryset) -> None:
        for run in queryset:
            try:
                sweep = services.create_sweep(
                    strategy=run.strategy, grid=neighbourhood_grid(run.parameters), exchange=run.exchange,
                    symbol=run.symbol, timeframe=run.timeframe, start=run.start, end=run.end, **run.rules_kwargs())
                self.message_user(request, f"run {run.pk}: sweep {sweep.pk} queued ({sweep.total} sets)",
                                  level=messages.SUCCESS)
            except ApplicationError as exc:
                self.message_user(request, f"run {run.pk}: {exc.message}", level=messages.ERROR)


class SweepResultInline(admin.TabularInline):
    model = SweepResult
    fields = ("index", "parameters", "error", "compute_seconds")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True


@admin.register(Sweep)
class SweepAdmin(admin.ModelAdmin):
    list_display = ("id", "strategy", "mode", "market", "status", "progress_bar", "completed", "total", "failed",
                    "metric", "best", "created_at", "report")
    list_filter = ("status", "strategy", "mode", "timeframe")
    search_fields = ("strategy", "symbol")
    readonly_fields = ("status", "total", "completed", "failed", "ranking", "error", "created_at", "started_at",
                       "finished_at")
    inlines = [SweepResultInline]
    actions = ["make_bots_top5"]

    @admin.action(description="Create paper bots from the 5 best parameter sets (stopped)")
    def make_bots_top5(self, request, queryset):
        report_bots_made(self, request, queryset, lambda sweep: f"sweep #{sweep.pk}",
                         lambda sweep: services.bots_from_sweep(sweep_id=sweep.pk, top=5))

    @admin.display(description="market")
    def market(self, obj):
        return obj.market_label

    @admin.display(description="progress")
    def progress_bar(self, obj):
        pct = round(obj.progress * 100)
        return format_html('<progress value="{}" max="100"></progress> {}%', pct, pct)

    @admin.display(description="report")
    def report(self, obj):
        return format_html('<a href="/dashboard/sweeps/{}/">ranking + heat map</a>', obj.pk)

    @admin.display(description="best")
    def best(self, obj):
        if not obj.ranking:
            return "-"
        top = obj.ranking[0]
        return f"{top.get('parameters')} {obj.metric}={top.get('value')}"


@admin.register(SweepResult)
class SweepResultAdmin(admin.ModelAdmin):
    list_display = ("sweep", "index", "parameters", "sharpe", "error", "compute_seconds")
    list_filter = ("sweep",)
    readonly_fields = ("sweep", "index", "parameters", "metrics", "error", "compute_seconds")

    @admin.display(description="sharpe")
    def sharpe(self, obj):
        return (obj.metrics or {}).get("sharpe")


@admin.register(WalkForward)
class WalkForwardAdmin(admin.ModelAdmin):
    list_display = ("id", "strategy", "market", "train_size", "test_size", "step", "metric", "status", "windows_n",
                    "oos_sharpe", "report", "created_at")
    list_filter = ("status", "strategy", "timeframe")
    readonly_fields = ("status", "windows", "stitched_metrics", "stitched_equity", "error", "created_at",
                       "finished_at")

    @admin.display(description="market")
    def market(self, obj):
        return obj.market_label

    @admin.display(description="report")
    def report(self, obj):
        return format_html('<a href="/dashboard/walkforwards/{}/">in vs out of sample</a>', obj.pk)

    @admin.display(description="windows")
    def windows_n(self, obj):
        return len(obj.windows or [])

    @admin.display(description="OOS sharpe")
    def oos_sharpe(self, obj):
        return (obj.stitched_metrics or {}).get("sharpe")


class StudyTrialInline(admin.TabularInline):
    model = StudyTrial
    fields = ("number", "parameters", "state", "value", "error", "told", "compute_seconds")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("-value",)


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    """Optuna studies (manage.py optimize): configuration and best trial; trials best first."""

    list_display = ("id", "name", "strategy", "market", "metric", "direction", "sampler", "status", "trials_done",
                    "best_value", "best_parameters", "created_at")
    list_filter = ("status", "strategy", "sampler", "timeframe")
    search_fields = ("name", "strategy", "symbol")
    readonly_fields = ("status", "best_value", "best_parameters", "n_trials", "created_at", "updated_at")
    inlines = [StudyTrialInline]
    actions = ["make_bots_top5"]

    @admin.action(description="Create paper bots from the 5 best trials (stopped)")
    def make_bots_top5(self, request, queryset):
        from apps.backtest.optimize import bots_from_study

        report_bots_made(self, request, queryset, lambda study: f"study {study.name}",
                         lambda study: bots_from_study(study_id=study.pk, top=5))

    @admin.display(description="market")
    def market(self, obj):
        return obj.market_label

    @admin.display(description="trials")
    def trials_done(self, obj):
        return obj.trials.exclude(state=StudyTrial.State.PENDING).count()


@admin.register(StudyTrial)
class StudyTrialAdmin(admin.ModelAdmin):
    list_display = ("id", "study", "number", "state", "value", "parameters", "told", "compute_seconds")
    list_filter = ("state", "told")
    readonly_fields = ("study", "number", "parameters", "state", "value", "metrics", "error", "told", "enqueued_at",
                       "finished_at", "compute_seconds")


# "Backtest this config" on the bots' admin: registered from here because backtest depends on bots (never back).
@admin.action(description="Backtest the selected bots' config over their stored candles")
def backtest_bot_config(modeladmin, request, queryset) -> None:
    for bot in queryset:
        try:
            run = services.create_run(strategy=bot.strategy, parameters=bot.parameters, exchange=bot.exchange,
                                      symbol=bot.symbol, timeframe=bot.timeframe, fee=bot.fee_rate,
                                      slippage=bot.slippage, initial_balance=bot.initial_balance,
                                      fraction=bot.fraction, stop_loss=bot.stop_loss, take_profit=bot.take_profit)
            modeladmin.message_user(request, f"{bot.name}: backtest run {run.pk} queued", level=messages.SUCCESS)
        except ApplicationError as exc:
            modeladmin.message_user(request, f"{bot.name}: {exc.message}", level=messages.ERROR)


_bot_admin = admin.site._registry.get(Bot)
if _bot_admin is not None and "backtest_bot_config" not in _bot_admin.actions:
    _bot_admin.actions = (*_bot_admin.actions, backtest_bot_config)
