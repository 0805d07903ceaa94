"""Backtest runs, parameter sweeps and walk-forward studies. Times are ms UTC close times, as in market_data."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from apps.bots.models import default_fee_rate
from apps.market.timeframes import TIMEFRAME_CHOICES


class Status(models.TextChoices):
    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    DONE = "done", "done"
    FAILED = "failed", "failed"


class DataArgs(models.Model):
    """Where the candles come from: a stored market (exchange/symbol/timeframe) or a CSV file, plus a time range."""

    exchange = models.CharField(max_length=32, blank=True, default="")
    symbol = models.CharField(max_length=32, blank=True, default="")
    timeframe = models.CharField(max_length=4, choices=TIMEFRAME_CHOICES)
    data_file = models.CharField(max_length=500, blank=True, default="", help_text="CSV path when not from the DB")
    time_label = models.CharField(max_length=5, blank=True, default="", help_text="open|close label of the CSV")
    start = models.BigIntegerField(null=True, blank=True, help_text="First candle close time, ms UTC (inclusive)")
    end = models.BigIntegerField(null=True, blank=True, help_text="Last candle close time, ms UTC (inclusive)")
    # Fill rules (apps.bots.trading.fills.FillRules).
    fee = models.FloatField(default=default_fee_rate, help_text="Fee per fill (default TRADEBOT_DEFAULT_FEE)")
    slippage = models.FloatField(default=0.0)
    initial_balance = models.FloatField(default=10_000.0)
    fraction = models.FloatField(default=1.0)
    stop_loss = models.FloatField(null=True, blank=True)
    take_profit = models.FloatField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def market_label(self) -> str:
        if self.data_file:
            return f"{self.data_file} {self.timeframe}"
        return f"{self.exchange} {self.symbol} {self.timeframe}"

    def rules_kwargs(self) -> dict:
        """Keyword arguments for FillRules, so every caller builds the rules the same way."""
        return {
            "fee": self.fee,
            "slippage": self.slippage,
            "initial_balance": self.initial_balance,
            "fraction": self.fraction,
            "stop_loss": self.stop_loss,
            "take_profit": self.take_profit,
        }


class Sweep(DataArgs):
    """Many parameter sets of one strategy over one data set, fanned out over Celery workers in chunks."""

    class Mode(models.TextChoices):
        GRID = "grid", "grid"
        RANDOM = "random", "random"

    strategy = models.CharField(max_length=64)
    mode = models.CharField(max_length=6, choices=Mode.choices, default=Mode.GRID)
    space = models.JSONField(default=dict, blank=True, help_text="grid: name -> list; random: name -> range override")
    n_samples = models.PositiveIntegerField(null=True, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    metric = models.CharField(max_length=40, default="sharpe")
    top_k = models.PositiveIntegerField(default=10)
    chunk_size = models.PositiveIntegerField(default=25)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    total = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0, help_text="Parameter sets evaluated so far (incl. failed)")
    failed = models.PositiveIntegerField(default=0)
    ranking = models.JSONField(default=list, blank=True, help_text="Top K results by metric")
    error = models.TextField(blank=True, default="")
    detail = models.CharField(max_length=8, blank=True, default="",
                              help_text="Intrabar detail for stop-loss/take-profit candles: '', '1m' or 'trades'")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True,
                                       help_text="Last time a chunk stored results (or the sweep was (re)dispatched)")
    redispatches = models.PositiveIntegerField(default=0, help_text="Times its missing chunks were sent again")

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.CheckConstraint(condition=Q(chunk_size__gt=0), name="sweep_chunk_size_pos")]

    def __str__(self) -> str:
        return f"sweep #{self.pk} {self.strategy} {self.market_label} ({self.status})"

    @property
    def progress(self) -> float:
        return (self.completed / self.total) if self.total else 0.0


class BacktestRun(DataArgs):
    """One strategy with one parameter set over one data set."""

    strategy = models.CharField(max_length=64)
    parameters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    progress = models.FloatField(default=0.0)
    metrics = models.JSONField(default=dict, blank=True)
    trades = models.JSONField(default=list, blank=True)
    open_trade = models.JSONField(null=True, blank=True)
    final_equity = models.FloatField(null=True, blank=True)
    equity_curve = models.JSONField(default=dict, blank=True, help_text="Downsampled {timestamp: [...], equity: [...]}")
    warnings = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True, default="")
    sweep = models.ForeignKey(Sweep, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    detail = models.CharField(max_length=8, blank=True, default="",
                              help_text="Intrabar detail for stop-loss/take-profit candles: '', '1m' or 'trades'")
    detail_report = models.JSONField(null=True, blank=True, help_text="What the detail changed vs candle-only")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration = models.FloatField(null=True, blank=True, help_text="Seconds of compute")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["strategy", "status"], name="backtest_run_strategy_status")]
        constraints = [models.CheckConstraint(condition=Q(progress__gte=0) & Q(progress__lte=1), name="run_progress")]

    def __str__(self) -> str:
        return f"run #{self.pk} {self.strategy} {self.market_label} ({self.status})"


class SweepResult(models.Model):
    """One parameter set of a sweep: its metrics, or the reason it failed."""

    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="results")
    index = models.PositiveIntegerField()
    parameters = models.JSONField(default=dict)
    metrics = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    compute_seconds = models.FloatField(null=True, blank=True)
    detail_report = models.JSONField(null=True, blank=True,
                                     help_text="With the sweep's detail: what it changed vs candle-only, warnings")

    class Meta:
        ordering = ["sweep", "index"]
        constraints = [models.UniqueConstraint(fields=["sweep", "index"], name="sweep_result_uniq")]

    def __str__(self) -> str:
        return f"sweep #{self.sweep_id} [{self.index}] {self.parameters}"


class WalkForward(DataArgs):
    """Rolling train/test windows: best parameters on train, evaluated out of sample on test, then stitched."""

    strategy = models.CharField(max_length=64)
    space = models.JSONField(default=dict, blank=True, help_text="grid: name -> list of values")
    train_size = models.PositiveIntegerField(help_text="Candles per train window")
    test_size = models.PositiveIntegerField(help_text="Candles per test window")
    step = models.PositiveIntegerField(null=True, blank=True, help_text="Candles between windows (default test)")
    metric = models.CharField(max_length=40, default="sharpe")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    windows = models.JSONField(default=list, blank=True)
    stitched_metrics = models.JSONField(default=dict, blank=True)
    stitched_equity = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"walk-forward #{self.pk} {self.strategy} {self.market_label} ({self.status})"


class Study(DataArgs):
    """An Optuna parameter search (`manage.py optimize`): the search state lives in Optuna's RDB storage under
    `name`; this row holds the configuration, and `StudyTrial` rows the evaluations the workers stored."""

    name = models.CharField(max_length=120, unique=True)
    strategy = models.CharField(max_length=64)
    space = models.JSONField(default=dict, blank=True, help_text="name -> [lo, hi] | {min, max, step, log} | "
                                                                  "{choices} | fixed value")
    metric = models.CharField(max_length=40, default="sharpe")
    direction = models.CharField(max_length=8, default="maximize")
    sampler = models.CharField(max_length=8, default="tpe")
    seed = models.BigIntegerField(null=True, blank=True)
    folds = models.PositiveIntegerField(default=1, help_text="Walk-forward: score = mean metric over N time folds")
    n_trials = models.PositiveIntegerField(default=0, help_text="Trials asked for (the last optimize command)")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    best_value = models.FloatField(null=True, blank=True)
    best_parameters = models.JSONField(null=True, blank=True)
    walk_forward = models.JSONField(
        null=True, blank=True,
        help_text="optimize --walk-forward: {train, test, step} candles, and when done the per-window report "
                  "(windows, stitched_metrics, stitched_equity, warnings); each window's search is a child study")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE,
                               related_name="window_studies",
                               help_text="The walk-forward study this window's in-sample search belongs to")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return f"study {self.name} {self.strategy} {self.market_label} ({self.status})"


class StudyTrial(models.Model):
    """One Optuna trial of a study: asked by the optimize command, evaluated by a worker (idempotently: only a
    pending row is ever written), told back to Optuna by the command (`told`)."""

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="trials")
    number = models.PositiveIntegerField(help_text="Optuna's trial number")
    parameters = models.JSONField(default=dict)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    value = models.FloatField(null=True, blank=True)
    metrics = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    told = models.BooleanField(default=False)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    compute_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["study", "number"]
        constraints = [models.UniqueConstraint(fields=["study", "number"], name="study_trial_uniq")]

    def __str__(self) -> str:
        return f"study {self.study_id} trial {self.number} {self.parameters} ({self.state})"
