"""Bots in the control panel: writes through apps.bots.services. Signals, trades and snapshots are what bots did:
read-only."""

from django import forms
from django.contrib import admin, messages

from apps.bots import services
from apps.bots.config import CONFIG_FIELDS, default_fee_rate, validate_config
from apps.bots.models import Bot, BotPerformance, Signal, Trade
from apps.bots.services import LIFECYCLE_FIELDS
from apps.common.errors import ApplicationError
from apps.market.timeframes import format_ms
from tradebot.admin import ReadOnlyAdmin


class BotAdminForm(forms.ModelForm):
    """The edit form validates with THE bot config validator (apps.bots.config), like the API and config files."""

    class Meta:
        model = Bot
        fields = CONFIG_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is None and "fee_rate" in self.fields:
            self.fields["fee_rate"].initial = default_fee_rate()

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        data = {k: cleaned[k] for k in CONFIG_FIELDS if k in cleaned}
        if data.get("parameters") in (None, ""):
            data["parameters"] = {}  # a blank field: the strategy's defaults
        try:
            self.config = validate_config(data, source="admin")
        except ApplicationError as exc:
            field = (exc.field or "").split(".")[0]
            self.add_error(field if field in self.fields else None, exc.message)
        return cleaned


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):
    """Config fields are edited here (saved through bot_create / bot_update); status only changes through the
    start/stop actions (bot_start / bot_stop); portfolio and liveness state are read-only."""

    form = BotAdminForm
    list_display = ("name", "strategy", "exchange", "symbol", "timeframe", "status", "equity_hint", "heartbeat_at",
                    "last_candle", "restart_count")
    list_filter = ("status", "strategy", "exchange", "timeframe")
    search_fields = ("name", "symbol")
    readonly_fields = (*LIFECYCLE_FIELDS, "config_file", "created_at", "updated_at")
    actions = ("start_bots", "stop_bots")
    fieldsets = (
        (None, {"fields": ("name", "strategy", "parameters", "config_file", "status")}),
        ("Market", {"fields": ("exchange", "symbol", "timeframe")}),
        ("Virtual trading", {"fields": ("initial_balance", "fee_rate", "fraction", "slippage", "stop_loss",
                                        "take_profit")}),
        ("State", {"fields": ("cash", "position", "entry_price", "entry_timestamp", "entry_fee", "fees_paid",
                              "peak_equity", "realized_pnl")}),
        ("Liveness", {"fields": ("heartbeat_at", "last_candle_timestamp", "history_start", "restart_times",
                                 "restart_count", "failed_at", "last_error", "created_at", "updated_at")}),
    )

    @admin.display(description="cash + position")
    def equity_hint(self, obj: Bot) -> str:
        return f"{obj.cash:,.2f} + {obj.position:g}"

    @admin.display(description="last candle (UTC)", ordering="last_candle_timestamp")
    def last_candle(self, obj: Bot) -> str:
        return format_ms(obj.last_candle_timestamp) if obj.last_candle_timestamp else "-"

    def save_model(self, request, obj: Bot, form, change: bool) -> None:
        if change:
            services.bot_update(bot=obj, data=form.config)
        else:
            obj.pk = services.bot_create(data=form.config).pk
        obj.refresh_from_db()

    def delete_model(self, request, obj: Bot) -> None:
        services.bot_delete(bot=obj)

    def delete_queryset(self, request, queryset) -> None:
        for bot in queryset:
            services.bot_delete(bot=bot)

    def _lifecycle(self, request, queryset, service, verb: str) -> None:
        done = 0
        for bot in queryset:
            try:
                service(bot=bot)
                done += 1
            except ApplicationError as exc:
                self.message_user(request, f"{bot.name}: {exc.message}", level=messages.ERROR)
        if done:
            self.message_user(request, f"{verb} {done} bot(s)", level=messages.SUCCESS)

    @admin.action(description="Start selected bots")
    def start_bots(self, request, queryset) -> None:
        self._lifecycle(request, queryset, services.bot_start, "started")

    @admin.action(description="Stop selected bots")
    def stop_bots(self, request, queryset) -> None:
        self._lifecycle(request, queryset, services.bot_stop, "stopped")


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
