"""Bots in the control panel. Signals, trades and snapshots are what bots did: read-only."""

from django.contrib import admin

from apps.bots.models import Bot, BotPerformance, Signal, Trade
from apps.market.timeframes import format_ms
from tradebot.admin import ReadOnlyAdmin


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):
    list_display = ("name", "strategy", "exchange", "symbol", "timeframe", "status", "equity_hint", "heartbeat_at",
                    "last_candle", "restart_count")
    list_filter = ("status", "strategy", "exchange", "timeframe")
    search_fields = ("name", "symbol")
    readonly_fields = ("cash", "position", "entry_price", "entry_timestamp", "peak_equity", "realized_pnl",
                       "heartbeat_at", "last_candle_timestamp", "restart_times", "restart_count", "last_error",
                       "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "strategy", "parameters", "config_file", "status")}),
        ("Market", {"fields": ("exchange", "symbol", "timeframe")}),
        ("Virtual trading", {"fields": ("initial_balance", "fee_rate", "fraction", "slippage", "stop_loss",
                                        "take_profit")}),
        ("State", {"fields": ("cash", "position", "entry_price", "entry_timestamp", "peak_equity", "realized_pnl")}),
        ("Liveness", {"fields": ("heartbeat_at", "last_candle_timestamp", "restart_times", "restart_count",
                                 "last_error", "created_at", "updated_at")}),
    )

    @admin.display(description="cash + position")
    def equity_hint(self, obj: Bot) -> str:
        return f"{obj.cash:,.2f} + {obj.position:g}"

    @admin.display(description="last candle (UTC)", ordering="last_candle_timestamp")
    def last_candle(self, obj: Bot) -> str:
        return format_ms(obj.last_candle_timestamp) if obj.last_candle_timestamp else "-"


@admin.register(Signal)
class SignalAdmin(ReadOnlyAdmin):
    list_display = ("bot", "time", "action", "confidence", "price")
    list_filter = ("action", "bot")
    show_full_result_count = False

    @admin.display(description="candle (close, UTC)", ordering="timestamp")
    def time(self, obj: Signal) -> str:
        return format_ms(obj.timestamp)


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = ("bot", "time", "side", "reason", "price", "amount", "fee", "realized_pnl", "cash_after",
                    "position_after")
    list_filter = ("side", "reason", "bot")

    @admin.display(description="candle (close, UTC)", ordering="timestamp")
    def time(self, obj: Trade) -> str:
        return format_ms(obj.timestamp)


@admin.register(BotPerformance)
class BotPerformanceAdmin(ReadOnlyAdmin):
    list_display = ("bot", "time", "cash", "position", "equity", "realized_pnl", "unrealized_pnl", "drawdown")
    list_filter = ("bot",)
    show_full_result_count = False

    @admin.display(description="candle (close, UTC)", ordering="timestamp")
    def time(self, obj: BotPerformance) -> str:
        return format_ms(obj.timestamp)
