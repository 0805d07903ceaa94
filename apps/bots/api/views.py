from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.bots import services
from apps.bots.api.serializers import BotSerializer, PerformanceSerializer, SignalSerializer, TradeSerializer
from apps.bots.models import Bot


class BotViewSet(viewsets.ModelViewSet):
    """Virtual bots. POST start/stop to change the lifecycle; signals, trades and performance are what it did."""

    queryset = Bot.objects.all()
    serializer_class = BotSerializer

    @extend_schema(request=None, responses=BotSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return Response(BotSerializer(services.start_bot(self.get_object())).data)

    @extend_schema(request=None, responses=BotSerializer)
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        return Response(BotSerializer(services.stop_bot(self.get_object())).data)

    def _page(self, queryset, serializer_class):
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(serializer_class(page, many=True).data)

    @extend_schema(responses=SignalSerializer(many=True))
    @action(detail=True, methods=["get"])
    def signals(self, request, pk=None):
        return self._page(self.get_object().signals.order_by("-timestamp"), SignalSerializer)

    @extend_schema(responses=TradeSerializer(many=True))
    @action(detail=True, methods=["get"])
    def trades(self, request, pk=None):
        return self._page(self.get_object().trades.order_by("-timestamp", "-id"), TradeSerializer)

    @extend_schema(responses=PerformanceSerializer(many=True))
    @action(detail=True, methods=["get"])
    def performance(self, request, pk=None):
        return self._page(self.get_object().performance.order_by("-timestamp"), PerformanceSerializer)
