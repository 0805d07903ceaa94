"""Bot API shapes. Input serializers only parse JSON types; the rules are THE bot config validator's
(apps.bots.config.BotConfig), applied by the services, so the API, admin, config files and commands agree."""

from rest_framework import serializers

from apps.bots.models import Bot, BotPerformance, Signal, Trade


class BotSerializer(serializers.ModelSerializer):
    """Output: a bot's config and its lifecycle state (read-only)."""

    class Meta:
        model = Bot
        fields = ("id", "name", "strategy", "parameters", "exchange", "symbol", "timeframe", "initial_balance",
                  "fee_rate", "fraction", "slippage", "stop_loss", "take_profit", "status", "cash", "position",
                  "entry_price", "realized_pnl", "fees_paid", "heartbeat_at", "last_candle_timestamp",
                  "restart_count", "last_error", "config_file", "created_at")
        read_only_fields = fields


class BotInputSerializer(serializers.Serializer):
    """Input of create (all of name, strategy, exchange, symbol, timeframe) and update (any subset on PATCH).

    Ranges: initial_balance > 0, 0 <= fee_rate < 1 (default TRADEBOT_DEFAULT_FEE), 0 < fraction <= 1,
    0 <= slippage < 1, stop_loss null or in (0, 1), take_profit null or > 0; parameters valid for the strategy."""

    name = serializers.CharField()
    strategy = serializers.CharField(help_text="Strategy registry name")
    parameters = serializers.JSONField(required=False, help_text="JSON object {parameter: value}")
    exchange = serializers.CharField()
    symbol = serializers.CharField(help_text="BASE/QUOTE, e.g. BTC/USDT")
    timeframe = serializers.CharField(help_text="1m, 5m, 15m, 30m, 1h, 4h or 1d")
    initial_balance = serializers.FloatField(required=False)
    fee_rate = serializers.FloatField(required=False)
    fraction = serializers.FloatField(required=False)
    slippage = serializers.FloatField(required=False)
    stop_loss = serializers.FloatField(required=False, allow_null=True)
    take_profit = serializers.FloatField(required=False, allow_null=True)


class SignalSerializer(serializers.ModelSerializer):
    class Meta:
        model = Signal
        fields = ("id", "bot", "timestamp", "action", "confidence", "indicators", "price")


class TradeSerializer(serializers.ModelSerializer):
    class Meta:
        model = Trade
        fields = ("id", "bot", "signal", "timestamp", "side", "reason", "price", "amount", "fee", "realized_pnl",
                  "cash_after", "position_after")


class PerformanceSerializer(serializers.ModelSerializer):
    class Meta:
        model = BotPerformance
        fields = ("timestamp", "cash", "position", "equity", "realized_pnl", "unrealized_pnl", "drawdown")


class _Stats(serializers.Serializer):
    trade_count = serializers.IntegerField()
    closed_trade_count = serializers.IntegerField()
    winning_trades = serializers.IntegerField()
    losing_trades = serializers.IntegerField()
    winrate = serializers.FloatField(allow_null=True)
    profit_factor = serializers.FloatField(allow_null=True)
    profit_closed = serializers.FloatField()
    gross_profit = serializers.FloatField()
    gross_loss = serializers.FloatField()
    fees = serializers.FloatField()
    first_trade_timestamp = serializers.IntegerField(allow_null=True)
    latest_trade_timestamp = serializers.IntegerField(allow_null=True)
    initial_balance = serializers.FloatField()
    equity = serializers.FloatField()
    profit_all = serializers.FloatField()
    profit_all_pct = serializers.FloatField()


class BotProfitSerializer(_Stats):
    """freqtrade's `/profit` for one bot."""

    bot_id = serializers.IntegerField()
    name = serializers.CharField()
    profit_closed_pct = serializers.FloatField()
    open_position = serializers.FloatField()
    max_drawdown = serializers.FloatField()


class FleetProfitSerializer(_Stats):
    """freqtrade's `/profit` over every bot."""

    bots = serializers.IntegerField()
    running = serializers.IntegerField()


class MarketPerformanceSerializer(serializers.Serializer):
    """freqtrade's `/performance`: one row per market."""

    exchange = serializers.CharField()
    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    profit = serializers.FloatField()
    count = serializers.IntegerField()
    bots = serializers.IntegerField()
