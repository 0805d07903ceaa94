"""Bots API: reads from the model, every write through apps.bots.services (validated by the bot config schema)."""

import orjson
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.bots import selectors, services
from apps.bots.api.serializers import (
    BotInputSerializer,
    BotProfitSerializer,
    BotSerializer,
    FleetProfitSerializer,
    MarketPerformanceSerializer,
    PerformanceSerializer,
    SignalSerializer,
    TradeSerializer,
)
from apps.bots.models import Bot

# TradeSerializer's fields and their database columns (same order).
TRADE_FIELDS = dict(zip(TradeSerializer.Meta.fields,
                        ("id", "bot_id", "signal_id", "timestamp", "side", "reason", "price", "amount", "fee",
                         "realized_pnl", "cash_after", "position_after"), strict=True))
_BIGINT_MAX = 2**63 - 1


def _bot_id(pk: str) -> int:
    """The URL's bot id, or a 404 (like get_object's for a non-integer or out-of-range pk)."""
    try:
        value = int(pk)
    except ValueError:
        raise NotFound from None
    if not 0 < value <= _BIGINT_MAX:
        raise NotFound
    return value


def _input(request, *, partial: bool, bot: Bot | None = None) -> dict:
    """The body's config fields (JSON types checked). A lifecycle field is refused by the shared state guard, except,
    on update, one equal to the bot's current value (a GET body sent back unchanged is fine)."""
    services.refuse_lifecycle(request.data, current=BotSerializer(bot).data if bot is not None else None)
    serializer = BotInputSerializer(data=request.data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class BotViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Virtual bots. POST start/stop/restart to change the lifecycle; signals, trades and performance are what it
    did; profit is its freqtrade-style summary."""

    queryset = Bot.objects.all().order_by("name")
    serializer_class = BotSerializer
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    @extend_schema(request=BotInputSerializer, responses={201: BotSerializer})
    def create(self, request, *args, **kwargs):
        bot = services.bot_create(data=_input(request, partial=False))
        return Response(BotSerializer(bot).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=BotInputSerializer, responses=BotSerializer)
    def update(self, request, *args, **kwargs):
        partial = kwargs.pop("partial", False)
        bot = self.get_object()
        bot = services.bot_update(bot=bot, data=_input(request, partial=partial, bot=bot))
        return Response(BotSerializer(bot).data)

    @extend_schema(request=BotInputSerializer, responses=BotSerializer)
    def partial_update(self, request, *args, **kwargs):
        kwargs["partial"] = True
        return self.update(request, *args, **kwargs)

    def destroy(self, request, *args, **kwargs):
        services.bot_delete(bot=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=BotSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return Response(BotSerializer(services.bot_start(bot=self.get_object())).data)

    @extend_schema(request=None, responses=BotSerializer)
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        return Response(BotSerializer(services.bot_stop(bot=self.get_object())).data)

    @extend_schema(request=None, responses=BotSerializer)
    @action(detail=True, methods=["post"])
    def restart(self, request, pk=None):
        bot = services.bot_stop(bot=self.get_object())
        return Response(BotSerializer(services.bot_start(bot=bot)).data)

    @extend_schema(responses=BotProfitSerializer)
    @action(detail=True, methods=["get"])
    def profit(self, request, pk=None):
        return Response(selectors.bot_profit(self.get_object()))

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
        """Newest first. A hot list (1,000-row pages for charts): the bot, count and page in one query, the JSON rows
        written by the database, no ModelSerializer."""
        paginator = self.paginator
        paginator.request = request
        paginator.limit, paginator.offset = paginator.get_limit(request), paginator.get_offset(request)
        found = selectors.trade_page_json(bot_id=_bot_id(pk), fields=TRADE_FIELDS, limit=paginator.limit,
                                          offset=paginator.offset)
        if found is None:
            raise NotFound
        paginator.count, results = found
        body = b"".join((orjson.dumps({"count": paginator.count, "next": paginator.get_next_link(),
                                       "previous": paginator.get_previous_link()})[:-1], b',"results":', results, b"}"))
        return HttpResponse(body, content_type="application/json")

    @extend_schema(responses=PerformanceSerializer(many=True))
    @action(detail=True, methods=["get"])
    def performance(self, request, pk=None):
        return self._page(self.get_object().performance.order_by("-timestamp"), PerformanceSerializer)


class FleetProfitView(APIView):
    """Like freqtrade's `/profit`: totals over every bot's trades and equity."""

    @extend_schema(responses=FleetProfitSerializer)
    def get(self, request):
        return Response(selectors.fleet_profit())


class MarketPerformanceView(APIView):
    """Like freqtrade's `/performance`: closed-trade profit per market, best first."""

    @extend_schema(responses=MarketPerformanceSerializer(many=True))
    def get(self, request):
        return Response(selectors.performance_by_market())
