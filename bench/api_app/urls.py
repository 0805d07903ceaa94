"""Baselines on the same data, the stock DRF way: ModelSerializer(many=True) + LimitOffsetPagination + JSONRenderer."""

from django.urls import path
from rest_framework import generics, serializers
from rest_framework.pagination import LimitOffsetPagination

from apps.bots.api.serializers import TradeSerializer
from apps.bots.models import Trade
from apps.market.models import Candle
from tradebot.urls import urlpatterns as project_urls


class CandleModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = Candle
        fields = ("timestamp", "open", "high", "low", "close", "volume")


class Page(LimitOffsetPagination):
    max_limit = 1000


class BaselineCandles(generics.ListAPIView):
    serializer_class = CandleModelSerializer
    pagination_class = Page

    def get_queryset(self):
        q = self.request.query_params
        return Candle.objects.filter(exchange=q["exchange"], symbol=q["symbol"],
                                     timeframe=q["timeframe"]).order_by("timestamp")


class BaselineTrades(generics.ListAPIView):
    serializer_class = TradeSerializer
    pagination_class = Page

    def get_queryset(self):
        return Trade.objects.filter(bot_id=self.kwargs["pk"]).order_by("-timestamp", "-id")


urlpatterns = [
    path("baseline/candles/", BaselineCandles.as_view()),
    path("baseline/bots/<int:pk>/trades/", BaselineTrades.as_view()),
    *project_urls,
]
