"""Backtest API serializers. Create serializers validate strategy and parameters with the strategy itself, so a bad
request gets a 400 naming the field (and the parameter) before any row is stored."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.backtest import services
from apps.backtest.models import BacktestRun, Study, Sweep, SweepResult, WalkForward

DATA_FIELDS = ["exchange", "symbol", "timeframe", "start", "end"]
RULE_FIELDS = ["fee", "slippage", "initial_balance", "fraction", "stop_loss", "take_profit"]


class BacktestRunListSerializer(serializers.ModelSerializer):
    class Meta:
        model = BacktestRun
        fields = ["id", "strategy", "parameters", *DATA_FIELDS, "data_file", *RULE_FIELDS, "status", "progress",
                  "metrics", "final_equity", "warnings", "error", "sweep", "detail", "detail_report", "created_at",
                  "started_at", "finished_at", "duration"]
        read_only_fields = fields


class BacktestRunSerializer(BacktestRunListSerializer):
    class Meta(BacktestRunListSerializer.Meta):
        fields = [*BacktestRunListSerializer.Meta.fields, "trades", "open_trade", "equity_curve"]
        read_only_fields = fields


class ResearchCreateSerializer(serializers.Serializer):
    """The input every research POST shares (run, sweep, walk-forward): the strategy, the stored market and close-time
    range, the fill rules; JSON types only (the rules are the services')."""

    strategy = serializers.CharField(max_length=64)
    exchange = serializers.CharField(max_length=32)
    symbol = serializers.CharField(max_length=32)
    timeframe = serializers.CharField(max_length=4)
    start = serializers.IntegerField(required=False, allow_null=True, help_text="Close time >= start (ms UTC)")
    end = serializers.IntegerField(required=False, allow_null=True, help_text="Close time <= end (ms UTC)")
    fee = serializers.FloatField(required=False)
    slippage = serializers.FloatField(required=False)
    initial_balance = serializers.FloatField(required=False)
    fraction = serializers.FloatField(required=False)
    stop_loss = serializers.FloatField(required=False, allow_null=True)
    take_profit = serializers.FloatField(required=False, allow_null=True)

    @staticmethod
    def service_kwargs(validated_data: dict[str, Any]) -> dict[str, Any]:
        """The input without its nulls (the service's defaults apply), but a null stop_loss / take_profit (no stop)."""
        return {k: v for k, v in validated_data.items() if v is not None or k in ("stop_loss", "take_profit")}


def detail_field() -> serializers.ChoiceField:
    """`detail` (run, sweep): stop-loss/take-profit candles resolved on finer stored data."""
    return serializers.ChoiceField(choices=["", "1m", "trades"], required=False, default="",
                                   help_text="Resolve stop-loss/take-profit candles on stored 1m candles or trades")


class BacktestRunCreateSerializer(ResearchCreateSerializer):
    """POST: a run over stored candles (exchange/symbol/timeframe); it is queued and runs on a `backtest` worker.

    Only JSON types are checked here; the rules (strategy, parameters, fill-rule ranges, range order) are the
    services' (apps.backtest.services.create_run), whose errors answer 400 naming the field."""

    parameters = serializers.JSONField(required=False, default=dict, help_text="JSON object {parameter: value}")
    detail = detail_field()

    def create(self, validated_data: dict[str, Any]) -> BacktestRun:
        return services.create_run(**validated_data)


class SweepSerializer(serializers.ModelSerializer):
    progress = serializers.FloatField(read_only=True)

    class Meta:
        model = Sweep
        fields = ["id", "strategy", "mode", "space", "n_samples", "seed", *DATA_FIELDS, "data_file", *RULE_FIELDS,
                  "metric", "top_k", "chunk_size", "detail", "status", "total", "completed", "failed", "progress",
                  "ranking", "error", "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class SweepCreateSerializer(ResearchCreateSerializer):
    """POST: {strategy, grid | (random, space?, seed?), exchange, symbol, timeframe, ...}; stored, then fanned out in
    chunks by a worker. Bounds (services.MAX_SWEEP_*): at most 10,000 parameter sets and 500 chunks per sweep,
    top_k at most 1,000."""

    grid = serializers.JSONField(required=False, help_text=f"{{parameter: [values]}}; the product must be at most "
                                                           f"{services.MAX_SWEEP_SETS} sets")
    random = serializers.IntegerField(required=False, min_value=1, max_value=services.MAX_SWEEP_SETS)
    space = serializers.JSONField(required=False)
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=2**32 - 1)
    metric = serializers.CharField(max_length=40, default="sharpe", help_text="A metric name; '-name' ranks ascending")
    top_k = serializers.IntegerField(min_value=1, default=10)
    chunk_size = serializers.IntegerField(min_value=1, default=25)
    detail = detail_field()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("grid" in attrs) == ("random" in attrs):
            raise serializers.ValidationError({"grid": "give exactly one of grid or random"})
        return attrs

    def create(self, validated_data: dict[str, Any]) -> Sweep:
        data = self.service_kwargs(validated_data)
        return services.create_sweep(n_random=data.pop("random", None), **data)


class SweepResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = SweepResult
        fields = ["index", "parameters", "metrics", "error", "compute_seconds", "detail_report"]
        read_only_fields = fields


class WalkForwardListSerializer(serializers.ModelSerializer):
    """A study with its windows (per window: the train/test close-time ranges, the parameters chosen in-sample, the
    in-sample and out-of-sample metrics) and the stitched out-of-sample metrics; the detail adds the equity curve."""

    class Meta:
        model = WalkForward
        fields = ["id", "strategy", "space", *DATA_FIELDS, "data_file", *RULE_FIELDS, "train_size", "test_size",
                  "step", "metric", "status", "windows", "stitched_metrics", "error", "created_at", "finished_at"]
        read_only_fields = fields


class WalkForwardSerializer(WalkForwardListSerializer):
    class Meta(WalkForwardListSerializer.Meta):
        fields = [*WalkForwardListSerializer.Meta.fields, "stitched_equity"]
        read_only_fields = fields


_SIZE_HELP = "Candles (an integer) or a duration like 30d, 12h, 90m, 2w (a whole number of candles)"


class WalkForwardCreateSerializer(ResearchCreateSerializer):
    """POST: {strategy, grid, train, test, step?, metric?, exchange, symbol, timeframe, start?, end?, fill rules};
    stored, then computed by a `backtest` worker. Bounds (services.MAX_WALKFORWARD_*): at most 1,000 parameter sets,
    200 windows and 20,000 backtests (sets x windows + windows) per study, sizes at most 10,000,000 candles.

    Only JSON types are checked here; the rules are the services' (create_walkforward), whose errors answer 400
    naming the field."""

    grid = serializers.JSONField(help_text=f"{{parameter: [values]}}; at most {services.MAX_WALKFORWARD_SETS} sets")
    train = serializers.CharField(max_length=32, help_text=f"Train window. {_SIZE_HELP}")
    test = serializers.CharField(max_length=32, help_text=f"Test window. {_SIZE_HELP}")
    step = serializers.CharField(max_length=32, required=False, allow_null=True,
                                 help_text=f"Between window starts (default: test). {_SIZE_HELP}")
    metric = serializers.CharField(max_length=40, default="sharpe", help_text="The in-sample metric choosing the "
                                                                              "parameters; '-name' picks the lowest")

    def create(self, validated_data: dict[str, Any]) -> WalkForward:
        return services.create_walkforward(**self.service_kwargs(validated_data))


class StudySerializer(serializers.ModelSerializer):
    class Meta:
        model = Study
        fields = ["id", "name", "strategy", "space", *DATA_FIELDS, "data_file", *RULE_FIELDS, "metric", "direction",
                  "sampler", "seed", "folds", "n_trials", "status", "best_value", "best_parameters", "walk_forward",
                  "parent", "created_at", "updated_at"]
        read_only_fields = fields


class StudyTrialSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    rank = serializers.IntegerField(allow_null=True)
    parameters = serializers.DictField()
    value = serializers.FloatField(allow_null=True)
    metrics = serializers.DictField()
    error = serializers.CharField(allow_blank=True)
