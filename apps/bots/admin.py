"""Bots in the control panel: writes through apps.bots.services. Signals, trades and snapshots are what bots did:
read-only."""

import time

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from apps.bots import selectors, services
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
    list_display = ("name", "strategy", "market", "status", "heartbeat_age", "equity", "open_position",
                    "restarts_last_hour", "last_candle", "error_short", "links")
    list_filter = ("status", "strategy", "exchange", "timeframe")
    search_fields = ("name", "symbol")
    readonly_fields = (*LIFECYCLE_FIELDS, "config_file", "created_at", "updated_at", "recent_activity")
    actions = ("start_bots", "stop_bots", "restart_bots", "replay_bots")
    fieldsets = (
        (None, {"fields": ("name", "strategy", "parameters", "config_file", "status")}),
        ("Recent signals and trades", {"fields": ("recent_activity",)}),
        ("Market", {"fields": ("exchange", "symbol", "timeframe")}),
        ("Virtual trading", {"fields": ("initial_balance", "fee_rate", "fraction", "slippage", "stop_loss",
                                        "take_profit")}),
        ("State", {"fields": ("cash", "position", "entry_price", "entry_timestamp", "entry_fee", "fees_paid",
                              "peak_equity", "realized_pnl")}),
        ("Liveness", {"fields": ("heartbeat_at", "last_candle_timestamp", "history_start", "restart_times",
                                 "restart_count", "failed_at", "last_error", "created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return selectors.with_equity(super().get_queryset(request))

    @admin.display(description="market", ordering="symbol")
    def market(self, obj: Bot) -> str:
        return f"{obj.exchange} {obj.symbol} {obj.timeframe}"

    @admin.display(description="equity", ordering="equity_now")
    def equity(self, obj: Bot) -> str:
        value = getattr(obj, "equity_now", None)
        return "-" if value is None else f"{value:,.2f}"

    @admin.display(description="position")
    def open_position(self, obj: Bot) -> str:
        if not obj.position:
            return "flat"
        return f"{obj.position:.6g} @ {obj.entry_price:,.2f}" if obj.entry_price else f"{obj.position:.6g}"

    @admin.display(description="heartbeat", ordering="heartbeat_at")
    def heartbeat_age(self, obj: Bot) -> str:
        if obj.heartbeat_at is None:
            return "never"
        seconds = int((timezone.now() - obj.heartbeat_at).total_seconds())
        return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago" if seconds < 7200 else \
            f"{seconds // 3600}h ago"

    @admin.display(description="restarts (1h)")
    def restarts_last_hour(self, obj: Bot) -> int:
        cutoff = time.time() * 1000 - 3_600_000
        return sum(1 for t in obj.restart_times or [] if t >= cutoff)

    @admin.display(description="last error")
    def error_short(self, obj: Bot) -> str:
        return (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else (obj.last_error or "-")

    @admin.display(description="open")
    def links(self, obj: Bot) -> str:
        return format_html('<a href="/dashboard/bots/{}/">dashboard</a> · <a href="/api/v1/bots/{}/profit/">profit'
                           '</a>', obj.pk, obj.pk)

    @admin.display(description="last 10 signals / trades")
    def recent_activity(self, obj: Bot) -> str:
        if obj.pk is None:
            return "-"
        signals = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (format_ms(s.timestamp), s.action, f"{s.price:,.2f}")
            for s in obj.signals.exclude(action="hold").order_by("-timestamp")[:10]))
        trades = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (format_ms(t.timestamp), t.side, t.reason, f"{t.price:,.2f}", f"{t.realized_pnl:+,.2f}")
            for t in obj.trades.order_by("-timestamp", "-id")[:10]))
        return format_html('<table><tr><th>signal (close, UTC)</th><th>action</th><th>price</th></tr>{}</table>'
                           '<table><tr><th>trade (close, UTC)</th><th>side</th><th>reason</th><th>price</th>'
                           '<th>P&amp;L</th></tr>{}</table>', signals or "", trades or "")

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

    @admin.action(description="Restart selected bots")
    def restart_bots(self, request, queryset) -> None:
        def restart(*, bot: Bot) -> Bot:
            return services.bot_start(bot=services.bot_stop(bot=bot))

        self._lifecycle(request, queryset, restart, "restarted")

    @admin.action(description="Replay selected bots over stored candles (fresh portfolio, on a worker)")
    def replay_bots(self, request, queryset) -> None:
        from apps.bots.tasks import replay_bot_task

        ids = list(queryset.values_list("pk", flat=True))
        for pk in ids:
            transaction.on_commit(lambda pk=pk: replay_bot_task.delay(pk))
        self.message_user(request, f"replay queued for {len(ids)} bot(s)", level=messages.SUCCESS)


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
