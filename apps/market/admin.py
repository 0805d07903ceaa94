"""Market data in the control panel. Candles and raw trades are derived data: read-only here."""

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.utils.html import format_html

from apps.common.errors import ApplicationError
from apps.market import selectors, services
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


class MarketAdminForm(forms.ModelForm):
    """Validated by the market service's validator: the provider must be able to serve the market."""

    class Meta:
        model = Market
        fields = ("exchange", "symbol", "timeframe", "provider", "watched")

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        instance = self.instance
        values = {k: cleaned.get(k, getattr(instance, k)) for k in ("exchange", "symbol", "timeframe", "provider")}
        try:
            services.validate_market(**values)
        except ApplicationError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        return cleaned


@admin.register(Market)
class MarketAdmin(admin.ModelAdmin):
    """Saved through market_create / market_update; watch/unwatch actions call market_watch / market_unwatch."""

    form = MarketAdminForm
    list_display = ("exchange", "symbol", "timeframe", "provider", "watched", "coverage", "last_collected_at",
                    "last_error", "chart")
    list_filter = ("exchange", "timeframe", "watched", "provider")
    search_fields = ("symbol", "exchange")
    readonly_fields = services.MARKET_STATE_FIELDS  # the shared state guard's fields
    inlines = (CoveredRangeInline, DataGapInline)
    actions = ("watch_markets", "unwatch_markets", "backfill_open_gaps")

    @admin.display(description="coverage (ledger)")
    def coverage(self, obj: Market) -> str:
        c = selectors.market_coverage(obj)
        if not c["candles"]:
            return "no candles"
        return (f"{c['candles']:,} candles {format_ms(c['first_timestamp'])} .. {format_ms(c['last_timestamp'])}; "
                f"{c['open_gaps']} open gaps ({c['missing_candles']:,} missing), {c['outage_gaps']} outages")

    @admin.display(description="chart")
    def chart(self, obj: Market) -> str:
        return format_html('<a href="/dashboard/markets/{}/">dashboard</a>', obj.pk)

    @admin.action(description="Backfill the selected markets' open gaps (on a worker)")
    def backfill_open_gaps(self, request, queryset) -> None:
        from apps.market.collector import enqueue_backfill
        from apps.market.timeframes import timeframe_ms

        queued = 0
        with transaction.atomic():
            for market in queryset:
                for gap in market.gaps.filter(status=DataGap.Status.OPEN):
                    enqueue_backfill(market.exchange, market.symbol, market.timeframe,
                                     gap.start_timestamp - timeframe_ms(market.timeframe), gap.end_timestamp)
                    queued += 1
        self.message_user(request, f"{queued} gap backfill(s) queued", level=messages.SUCCESS)

    def get_readonly_fields(self, request, obj=None):
        identity = ("exchange", "symbol", "timeframe") if obj is not None else ()
        return (*identity, *self.readonly_fields)

    def save_model(self, request, obj: Market, form, change: bool) -> None:
        data = form.cleaned_data
        if change:
            services.market_update(market=obj, provider=data.get("provider"), watched=data.get("watched"))
        else:
            obj.pk = services.market_create(exchange=data["exchange"], symbol=data["symbol"],
                                            timeframe=data["timeframe"], provider=data.get("provider") or None,
                                            watched=bool(data.get("watched"))).pk
        obj.refresh_from_db()

    def delete_model(self, request, obj: Market) -> None:
        services.market_delete(market=obj)

    def delete_queryset(self, request, queryset) -> None:
        for market in queryset:
            services.market_delete(market=market)

    @admin.action(description="Watch selected markets (collect every round)")
    def watch_markets(self, request, queryset) -> None:
        for market in queryset:
            try:
                services.market_watch(exchange=market.exchange, symbol=market.symbol, timeframe=market.timeframe)
            except ApplicationError as exc:
                self.message_user(request, f"{market}: {exc.message}", level=messages.ERROR)

    @admin.action(description="Unwatch selected markets")
    def unwatch_markets(self, request, queryset) -> None:
        for market in queryset:
            services.market_unwatch(market=market)


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
