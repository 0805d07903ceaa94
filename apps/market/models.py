"""Market data tables. Timestamps are integer ms UTC; candle timestamps are CLOSE times (see timeframes.py)."""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q

from apps.market.timeframes import TIMEFRAME_CHOICES, format_ms


class Market(models.Model):
    """A market and timeframe the collector knows. Watched markets are collected on every beat round."""

    exchange = models.CharField(max_length=32)
    symbol = models.CharField(max_length=32, help_text="Unified symbol, e.g. BTC/USDT")
    timeframe = models.CharField(max_length=4, choices=TIMEFRAME_CHOICES)
    provider = models.CharField(max_length=16, default="ccxt", help_text="Provider registry name")
    watched = models.BooleanField(default=False, help_text="Collect on every beat round even without a bot")
    class Mode(models.TextChoices):
        POLL = "poll", "poll (beat-scheduled REST fetch_ohlcv)"
        STREAM = "stream", "stream (ccxt.pro trades aggregated live by `manage.py stream`)"

    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.POLL)
    store_raw_trades = models.BooleanField(default=False, help_text="Stream: also store every trade in raw_trades")
    flat_fill = models.BooleanField(
        default=False, help_text="Stream: a minute without trades becomes a flat zero-volume candle (else no candle)"
    )
    stream_timeout = models.PositiveIntegerField(
        default=120, help_text="Stream: seconds without a trade after which the stream is treated as dropped"
    )
    stream_fence = models.BigIntegerField(
        default=0, help_text="Fencing token of the stream lease that last wrote (a stale owner's writes are refused)"
    )
    stream_confirmed = models.BigIntegerField(
        null=True, blank=True,
        help_text="Stream: close time through which stored 1m candles are known complete (a takeover repairs after it)",
    )
    last_collected_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    failures = models.PositiveIntegerField(default=0, help_text="Consecutive failed collections (backoff)")
    retry_after = models.DateTimeField(null=True, blank=True, help_text="No collection before this (backoff)")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["exchange", "symbol", "timeframe"], name="market_uniq"),
        ]
        ordering = ["exchange", "symbol", "timeframe"]

    def __str__(self) -> str:
        return f"{self.exchange} {self.symbol} {self.timeframe}"


class Candle(models.Model):
    """One closed OHLCV candle covering [timestamp - timeframe, timestamp)."""

    id = models.BigAutoField(primary_key=True)
    exchange = models.CharField(max_length=32)
    symbol = models.CharField(max_length=32)
    timeframe = models.CharField(max_length=4, choices=TIMEFRAME_CHOICES)
    timestamp = models.BigIntegerField(help_text="Close time, ms UTC")
    open = models.FloatField()
    high = models.FloatField()
    low = models.FloatField()
    close = models.FloatField()
    volume = models.FloatField()

    class Meta:
        db_table = "market_data"
        constraints = [
            models.UniqueConstraint(
                fields=["exchange", "symbol", "timeframe", "timestamp"], name="market_data_uniq"
            ),
            models.CheckConstraint(condition=Q(volume__gte=0), name="market_data_volume_nonneg"),
            models.CheckConstraint(
                condition=Q(high__gte=F("low")) & Q(high__gte=F("open")) & Q(high__gte=F("close"))
                & Q(low__lte=F("open")) & Q(low__lte=F("close")),
                name="market_data_hl_consistent",
            ),
        ]
        indexes = [models.Index(fields=["symbol", "timeframe", "timestamp"], name="market_data_sym_tf_ts")]
        ordering = ["exchange", "symbol", "timeframe", "timestamp"]

    def __str__(self) -> str:
        return f"{self.exchange} {self.symbol} {self.timeframe} @ {format_ms(self.timestamp)}"


class RawTrade(models.Model):
    """A raw exchange trade. On PostgreSQL the table is partitioned by month of `timestamp` (see migration 0002)."""

    id = models.BigAutoField(primary_key=True)
    exchange = models.CharField(max_length=32)
    symbol = models.CharField(max_length=32)
    trade_id = models.CharField(max_length=64)
    timestamp = models.BigIntegerField(help_text="Trade time, ms UTC")
    price = models.FloatField()
    amount = models.FloatField()
    side = models.CharField(max_length=4, blank=True, default="")

    class Meta:
        db_table = "raw_trades"
        constraints = [
            models.UniqueConstraint(
                fields=["exchange", "symbol", "trade_id", "timestamp"], name="raw_trades_uniq"
            ),
        ]
        indexes = [models.Index(fields=["exchange", "symbol", "timestamp"], name="raw_trades_ex_sym_ts")]

    def __str__(self) -> str:
        return f"{self.exchange} {self.symbol} #{self.trade_id}"


class CoveredRange(models.Model):
    """Data-quality ledger: a contiguous run of stored candles [first, last] (close times, inclusive)."""

    market = models.ForeignKey(Market, on_delete=models.CASCADE, related_name="covered_ranges")
    first_timestamp = models.BigIntegerField()
    last_timestamp = models.BigIntegerField()
    candles = models.PositiveIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["market", "first_timestamp"], name="covered_range_uniq"),
            models.CheckConstraint(
                condition=Q(last_timestamp__gte=F("first_timestamp")), name="covered_range_ordered"
            ),
        ]
        ordering = ["market", "first_timestamp"]

    def __str__(self) -> str:
        return f"{self.market}: {format_ms(self.first_timestamp)} .. {format_ms(self.last_timestamp)}"


class DataGap(models.Model):
    """Data-quality ledger: candles missing between covered ranges (close times of the first and last missing one)."""

    class Status(models.TextChoices):
        OPEN = "open", "open (to backfill)"
        FILLED = "filled", "filled by backfill"
        EXCHANGE_OUTAGE = "exchange_outage", "exchange has no data (outage)"
        EMPTY = "empty", "source reported nothing (no trades / no row in the imported file)"

    market = models.ForeignKey(Market, on_delete=models.CASCADE, related_name="gaps")
    start_timestamp = models.BigIntegerField(help_text="Close time of the first missing candle")
    end_timestamp = models.BigIntegerField(help_text="Close time of the last missing candle")
    missing = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    attempts = models.PositiveSmallIntegerField(default=0)
    detected_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["market", "start_timestamp"], name="data_gap_uniq"),
            models.CheckConstraint(condition=Q(end_timestamp__gte=F("start_timestamp")), name="data_gap_ordered"),
        ]
        ordering = ["market", "start_timestamp"]

    def __str__(self) -> str:
        return f"{self.market}: {self.missing} missing from {format_ms(self.start_timestamp)} ({self.status})"


class StreamRepair(models.Model):
    """Data-quality ledger: a range of candles a stream rebuilt from REST after it (re)connected or took a market over
    (close times, inclusive), so what was repaired, when and why stays visible after the holes are gone."""

    market = models.ForeignKey(Market, on_delete=models.CASCADE, related_name="stream_repairs")
    start_timestamp = models.BigIntegerField(help_text="Close time of the first repaired candle")
    end_timestamp = models.BigIntegerField(help_text="Close time of the last repaired candle")
    trades = models.PositiveIntegerField(default=0, help_text="Trades fetched by REST")
    candles = models.PositiveIntegerField(default=0, help_text="Candles built from them (minutes without trades: none)")
    corrected = models.PositiveIntegerField(
        default=0, help_text="Stored candles whose values changed (closed by the clock before a late trade arrived)"
    )
    reason = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["market", "start_timestamp"]

    def __str__(self) -> str:
        return f"{self.market}: repaired {format_ms(self.start_timestamp)} .. {format_ms(self.end_timestamp)}"
