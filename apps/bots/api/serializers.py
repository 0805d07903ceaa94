from rest_framework import serializers

from apps.bots.models import Bot, BotPerformance, Signal, Trade
from apps.bots.strategies.base import ParameterError
from apps.bots.strategies.registry import UnknownStrategyError, create_strategy
from apps.market.timeframes import TIMEFRAMES


class BotSerializer(serializers.ModelSerializer):
    timeframe = serializers.ChoiceField(choices=TIMEFRAMES)

    class Meta:
        model = Bot
        fields = ("id", "name", "strategy", "parameters", "exchange", "symbol", "timeframe", "initial_balance",
                  "fee_rate", "fraction", "slippage", "stop_loss", "take_profit", "status", "cash", "position",
                  "entry_price", "realized_pnl", "fees_paid", "heartbeat_at", "last_candle_timestamp",
                  "restart_count", "last_error", "config_file", "created_at")
        read_only_fields = ("status", "cash", "position", "entry_price", "realized_pnl", "fees_paid", "heartbeat_at",
                            "last_candle_timestamp", "restart_count", "last_error", "config_file", "created_at")

    def validate(self, attrs):
        strategy = attrs.get("strategy", getattr(self.instance, "strategy", None))
        parameters = attrs.get("parameters", getattr(self.instance, "parameters", {}))
        try:
            attrs["parameters"] = dict(create_strategy(strategy, parameters).parameters)
        except UnknownStrategyError as exc:
            raise serializers.ValidationError({"strategy": str(exc)}) from None
        except ParameterError as exc:
            raise serializers.ValidationError({"parameters": str(exc)}) from None
        return attrs


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
