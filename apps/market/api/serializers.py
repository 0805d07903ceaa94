from rest_framework import serializers

from apps.market.models import DataGap, Market
from apps.market.providers.registry import available
from apps.market.timeframes import TIMEFRAMES

MS_MAX = 10**13  # year 2286 in ms: anything beyond is a typo (seconds vs ms) or an attack, never a candle


class MarketSerializer(serializers.ModelSerializer):
    timeframe = serializers.ChoiceField(choices=TIMEFRAMES)

    class Meta:
        model = Market
        fields = ("id", "exchange", "symbol", "timeframe", "provider", "watched", "last_collected_at", "last_error",
                  "created_at")
        read_only_fields = fields


class MarketInputSerializer(serializers.Serializer):
    """Input of create (exchange, symbol, timeframe; provider and watched optional) and update (provider, watched).
    The rules are the market service's validator (apps.market.services.validate_market)."""

    exchange = serializers.CharField(max_length=32)
    symbol = serializers.CharField(max_length=32, help_text="BASE/QUOTE, e.g. BTC/USDT")
    timeframe = serializers.CharField(max_length=4, help_text="1m, 5m, 15m, 30m, 1h, 4h or 1d")
    provider = serializers.CharField(max_length=16, required=False, help_text="Provider registry name (default ccxt)")
    watched = serializers.BooleanField(required=False, default=False)


class MarketUpdateSerializer(serializers.Serializer):
    provider = serializers.CharField(max_length=16, required=False)
    watched = serializers.BooleanField(required=False)

    def validate_provider(self, value: str) -> str:
        names = available()
        if value not in names:
            raise serializers.ValidationError(f"unknown provider {value!r}: expected one of {', '.join(names)}")
        return value


class CoverageSerializer(serializers.Serializer):
    market = serializers.CharField()
    exchange = serializers.CharField()
    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    first_timestamp = serializers.IntegerField(allow_null=True)
    last_timestamp = serializers.IntegerField(allow_null=True)
    candles = serializers.IntegerField()
    covered_ranges = serializers.IntegerField()
    open_gaps = serializers.IntegerField()
    missing_candles = serializers.IntegerField()
    outage_gaps = serializers.IntegerField()
    outage_missing_candles = serializers.IntegerField()
    filled_gaps = serializers.IntegerField()


class BackfillRequestSerializer(serializers.Serializer):
    since = serializers.IntegerField(min_value=0, max_value=MS_MAX, help_text="First close time, ms UTC")
    until = serializers.IntegerField(min_value=0, max_value=MS_MAX, required=False, allow_null=True,
                                     help_text="Last close time, ms UTC (default: now)")

    def validate(self, attrs):
        if attrs.get("until") is not None and attrs["until"] < attrs["since"]:
            raise serializers.ValidationError({"until": "must be >= since"})
        return attrs


class QueuedSerializer(serializers.Serializer):
    queued = serializers.BooleanField()
    detail = serializers.CharField()


class DataGapSerializer(serializers.ModelSerializer):
    market = serializers.StringRelatedField()

    class Meta:
        model = DataGap
        fields = ("id", "market", "start_timestamp", "end_timestamp", "missing", "status", "attempts", "note")


class CandleQuerySerializer(serializers.Serializer):
    """Query parameters of the lean candle endpoint; errors come back as a 400 naming the field."""

    exchange = serializers.CharField(max_length=32)
    symbol = serializers.CharField(max_length=32)
    timeframe = serializers.ChoiceField(choices=TIMEFRAMES)
    start = serializers.IntegerField(required=False, min_value=0, max_value=MS_MAX,
                                     help_text="Close time >= start (ms UTC)")
    end = serializers.IntegerField(required=False, min_value=0, max_value=MS_MAX,
                                   help_text="Close time <= end (ms UTC)")
    after = serializers.IntegerField(required=False, min_value=0, max_value=MS_MAX,
                                     help_text="Cursor: close time > after")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=5000, default=1000)

    def validate(self, attrs):
        if "start" in attrs and "end" in attrs and attrs["start"] > attrs["end"]:
            raise serializers.ValidationError({"end": "end must be >= start"})
        return attrs
