"""Bots and what they decide and do. Candle timestamps are close times in ms UTC, as in market_data."""

from __future__ import annotations

import sys

from django.db import models
from django.db.models import Q

from apps.market.timeframes import TIMEFRAME_CHOICES, format_ms


def finite(*fields: str) -> Q:
    """Every field a finite float. NaN and infinities pass `> 0` on PostgreSQL (NaN sorts above every number), and
    would be written into API pages as the invalid JSON tokens NaN / Infinity."""
    q = Q()
    for f in fields:
        q &= Q(**{f"{f}__gte": -sys.float_info.max, f"{f}__lte": sys.float_info.max})
    return q


def default_fee_rate() -> float:
    """A new bot's (and backtest job's) fee per fill: settings.TRADEBOT_DEFAULT_FEE, like a config without fee_rate."""
    from apps.bots.config import default_fee_rate as config_default

    return config_default()


class Bot(models.Model):
    class Status(models.TextChoices):
        STOPPED = "stopped", "stopped"
        RUNNING = "running", "running"
        ERROR = "error", "error"

    name = models.CharField(max_length=100, unique=True)
    strategy = models.CharField(max_length=64, help_text="Strategy registry name")
    parameters = models.JSONField(default=dict, blank=True)
    config_file = models.CharField(max_length=255, blank=True, default="", help_text="config/bots/*.json it came from")
    exchange = models.CharField(max_length=32)
    symbol = models.CharField(max_length=32)
    timeframe = models.CharField(max_length=4, choices=TIMEFRAME_CHOICES)
    initial_balance = models.FloatField(default=10_000.0)
    fee_rate = models.FloatField(default=default_fee_rate, help_text="Fee per fill (default TRADEBOT_DEFAULT_FEE)")
    fraction = models.FloatField(default=1.0, help_text="Share of cash spent on a buy")
    slippage = models.FloatField(default=0.0)
    stop_loss = models.FloatField(null=True, blank=True, help_text="e.g. 0.05 = exit 5% below entry")
    take_profit = models.FloatField(null=True, blank=True, help_text="e.g. 0.10 = exit 10% above entry")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.STOPPED)
    # Virtual portfolio state after the last processed candle.
    cash = models.FloatField(default=10_000.0)
    position = models.FloatField(default=0.0)
    entry_price = models.FloatField(null=True, blank=True)
    entry_timestamp = models.BigIntegerField(null=True, blank=True)
    entry_fee = models.FloatField(default=0.0)
    fees_paid = models.FloatField(default=0.0)
    peak_equity = models.FloatField(default=10_000.0)
    realized_pnl = models.FloatField(default=0.0)
    # Liveness and recovery bookkeeping.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_candle_timestamp = models.BigIntegerField(null=True, blank=True, help_text="Last processed candle (close ms)")
    history_start = models.BigIntegerField(
        null=True, blank=True,
        help_text="First candle (close ms) the strategy sees; recursive indicators (EMA, RSI) depend on it",
    )
    restart_times = models.JSONField(default=list, blank=True, help_text="Restart times (ms) in the rolling hour")
    restart_count = models.PositiveIntegerField(default=0)
    failed_at = models.DateTimeField(null=True, blank=True, help_text="Last tick failure not yet restarted")
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "bots"
        constraints = [
            models.CheckConstraint(condition=Q(fee_rate__gte=0) & Q(fee_rate__lt=1), name="bots_fee_rate_range"),
            models.CheckConstraint(condition=Q(fraction__gt=0) & Q(fraction__lte=1), name="bots_fraction_range"),
            models.CheckConstraint(condition=Q(initial_balance__gt=0), name="bots_initial_balance_pos"),
            models.CheckConstraint(condition=Q(position__gte=0), name="bots_long_only"),
        ]
        indexes = [models.Index(fields=["exchange", "symbol", "timeframe", "status"], name="bots_market_status")]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.strategy} {self.exchange} {self.symbol} {self.timeframe})"


class Signal(models.Model):
    class Action(models.TextChoices):
        BUY = "buy", "buy"
        SELL = "sell", "sell"
        HOLD = "hold", "hold"

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="signals", db_index=False)
    timestamp = models.BigIntegerField(help_text="Close time of the decided candle, ms UTC")
    action = models.CharField(max_length=4, choices=Action.choices)
    confidence = models.FloatField(default=1.0)
    indicators = models.JSONField(default=dict, blank=True)
    price = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "signals"
        constraints = [
            models.UniqueConstraint(fields=["bot", "timestamp"], name="signals_one_per_candle"),
            models.CheckConstraint(condition=Q(confidence__gte=0) & Q(confidence__lte=1), name="signals_conf_0_1"),
        ]
        ordering = ["bot", "timestamp"]

    def __str__(self) -> str:
        return f"{self.bot_id} {self.action} @ {format_ms(self.timestamp)}"


class Trade(models.Model):
    class Side(models.TextChoices):
        BUY = "buy", "buy"
        SELL = "sell", "sell"

    class Reason(models.TextChoices):
        SIGNAL = "signal", "signal"
        STOP_LOSS = "stop_loss", "stop-loss"
        TAKE_PROFIT = "take_profit", "take-profit"

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="trades", db_index=False)
    signal = models.ForeignKey(Signal, on_delete=models.SET_NULL, null=True, blank=True, related_name="trades")
    timestamp = models.BigIntegerField(help_text="Candle close time of the fill, ms UTC")
    side = models.CharField(max_length=4, choices=Side.choices)
    reason = models.CharField(max_length=12, choices=Reason.choices, default=Reason.SIGNAL)
    price = models.FloatField(help_text="Fill price after slippage")
    amount = models.FloatField()
    fee = models.FloatField()
    realized_pnl = models.FloatField(default=0.0, help_text="Round-trip P&L net of both fees, on sells")
    cash_after = models.FloatField()
    position_after = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "trades"
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0) & Q(price__gt=0) & Q(fee__gte=0), name="trades_positive"),
            models.CheckConstraint(condition=finite("price", "amount", "fee", "realized_pnl", "cash_after",
                                                    "position_after"), name="trades_finite"),
            models.UniqueConstraint(fields=["bot", "timestamp", "side"], name="trades_one_fill_per_side_candle"),
        ]
        # The trades list pages a bot's trades newest first (timestamp, id): read backwards off this index, not a sort.
        indexes = [models.Index(fields=["bot", "timestamp", "id"], name="trades_bot_time_id")]
        ordering = ["bot", "timestamp"]

    def __str__(self) -> str:
        return f"{self.bot_id} {self.side} {self.amount:g} @ {self.price:g}"


class BotPerformance(models.Model):
    """Portfolio snapshot after each tick."""

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="performance", db_index=False)
    timestamp = models.BigIntegerField(help_text="Candle close time, ms UTC")
    cash = models.FloatField()
    position = models.FloatField()
    equity = models.FloatField()
    realized_pnl = models.FloatField()
    unrealized_pnl = models.FloatField()
    drawdown = models.FloatField(help_text="Fraction below the running equity peak, 0..1")

    class Meta:
        db_table = "bot_performance"
        constraints = [
            models.UniqueConstraint(fields=["bot", "timestamp"], name="bot_performance_one_per_candle"),
            models.CheckConstraint(condition=Q(drawdown__gte=0) & Q(drawdown__lte=1), name="bot_performance_dd_0_1"),
            models.CheckConstraint(condition=finite("cash", "position", "equity", "realized_pnl", "unrealized_pnl"),
                                   name="bot_performance_finite"),
        ]
        ordering = ["bot", "timestamp"]

    def __str__(self) -> str:
        return f"{self.bot_id} equity {self.equity:g} @ {format_ms(self.timestamp)}"
