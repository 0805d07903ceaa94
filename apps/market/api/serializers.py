from rest_framework import serializers

from apps.market.models import DataGap, Market
from apps.market.timeframes import TIMEFRAMES


class MarketSerializer(serializers.ModelSerializer):
    class Meta:
        model = Market
        fields = ("id", "exchange", "symbol", "timeframe", "provider", "watched", "last_collected_at", "last_error",
                  "created_at")
        read_only_fields = ("last_collected_at", "last_error", "created_at")


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
    start = serializers.IntegerField(required=False, min_value=0, help_text="Close time >= start (ms UTC)")
    end = serializers.IntegerField(required=False, min_value=0, help_text="Close time <= end (ms UTC)")
    after = serializers.IntegerField(required=False, min_value=0, help_text="Cursor: close time > after")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=5000, default=1000)

    def validate(self, attrs):
        if "start" in attrs and "end" in attrs and attrs["start"] > attrs["end"]:
            raise serializers.ValidationError({"end": "end must be >= start"})
        return attrs
