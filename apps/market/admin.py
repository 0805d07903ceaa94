"""Market data in the control panel. Candles and raw trades are derived data: read-only here."""

from django.contrib import admin

from apps.market.models import Candle, CoveredRange, DataGap, Market, RawTrade
from apps.market.timeframes import format_ms
from tradebot.admin import ReadOnlyAdmin


class CoveredRangeInline(admin.TabularInline):
    model = CoveredRange
    extra = 0
    can_delete = False
    readonly_fields = ("first_timestamp", "last_timestamp", "candles", "updated_at")

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class DataGapInline(admin.TabularInline):
    model = DataGap
    extra = 0
    fields = ("start_timestamp", "end_timestamp", "missing", "status", "attempts", "note")
    readonly_fields = ("start_timestamp", "end_timestamp", "missing", "attempts")


@admin.register(Market)
class MarketAdmin(admin.ModelAdmin):
    list_display = ("exchange", "symbol", "timeframe", "provider", "watched", "last_collected_at", "last_error")
    list_filter = ("exchange", "timeframe", "watched", "provider")
    list_editable = ("watched",)
    search_fields = ("symbol", "exchange")
    readonly_fields = ("last_collected_at", "last_error", "created_at")
    inlines = (CoveredRangeInline, DataGapInline)


@admin.register(Candle)
class CandleAdmin(ReadOnlyAdmin):
    list_display = ("exchange", "symbol", "timeframe", "close_time", "open", "high", "low", "close", "volume")
    list_filter = ("exchange", "timeframe")
    search_fields = ("symbol",)
    show_full_result_count = False  # COUNT(*) over millions of candles on every page is too slow

    @admin.display(description="close time (UTC)", ordering="timestamp")
    def close_time(self, obj: Candle) -> str:
        return format_ms(obj.timestamp)


@admin.register(RawTrade)
class RawTradeAdmin(ReadOnlyAdmin):
    list_display = ("exchange", "symbol", "trade_id", "time", "price", "amount", "side")
    list_filter = ("exchange", "side")
    search_fields = ("symbol", "trade_id")
    show_full_result_count = False

    @admin.display(description="time (UTC)", ordering="timestamp")
    def time(self, obj: RawTrade) -> str:
        return format_ms(obj.timestamp)


@admin.register(DataGap)
class DataGapAdmin(admin.ModelAdmin):
    list_display = ("market", "start", "end", "missing", "status", "attempts", "last_attempt_at", "note")
    list_filter = ("status", "market__exchange", "market__timeframe")
    readonly_fields = ("market", "start_timestamp", "end_timestamp", "missing", "attempts", "detected_at",
                       "last_attempt_at")

    @admin.display(description="first missing (close, UTC)", ordering="start_timestamp")
    def start(self, obj: DataGap) -> str:
        return format_ms(obj.start_timestamp)

    @admin.display(description="last missing (close, UTC)", ordering="end_timestamp")
    def end(self, obj: DataGap) -> str:
        return format_ms(obj.end_timestamp)
