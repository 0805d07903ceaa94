"""Market API. The candle list is the hot path: it skips the ModelSerializer (4x slower per page, see
bench figures in the design) and passes through the JSON rows the database wrote off the (symbol, timeframe,
timestamp) index, with a cursor."""

from __future__ import annotations

import orjson
from django.db import transaction
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.market import selectors, services
from apps.market.api.serializers import (
    BackfillRequestSerializer,
    CandleQuerySerializer,
    CoverageSerializer,
    DataGapSerializer,
    MarketInputSerializer,
    MarketSerializer,
    MarketUpdateSerializer,
    QueuedSerializer,
)
from apps.market.models import DataGap, Market
from apps.market.validation import CANDLE_COLUMNS

CandlePage = inline_serializer("CandlePage", {
    "columns": serializers.ListField(child=serializers.CharField()),
    "rows": serializers.ListField(child=serializers.ListField(child=serializers.FloatField())),
    "next": serializers.URLField(allow_null=True),
})


class MarketViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Markets the collector knows; watched ones are collected on every beat round. Writes go through the market
    services (validated: the provider must serve the market)."""

    queryset = Market.objects.all()
    serializer_class = MarketSerializer

    @extend_schema(request=MarketInputSerializer, responses={201: MarketSerializer})
    def create(self, request, *args, **kwargs):
        services.refuse_market_state(request.data)
        data = MarketInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        market = services.market_create(**data.validated_data)
        return Response(MarketSerializer(market).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MarketUpdateSerializer, responses=MarketSerializer)
    def update(self, request, *args, **kwargs):
        market = self.get_object()
        services.refuse_market_state(request.data, current=MarketSerializer(market).data)
        data = MarketUpdateSerializer(data=request.data, partial=kwargs.pop("partial", False))
        data.is_valid(raise_exception=True)
        market = services.market_update(market=market, **data.validated_data)
        return Response(MarketSerializer(market).data)

    @extend_schema(request=MarketUpdateSerializer, responses=MarketSerializer)
    def partial_update(self, request, *args, **kwargs):
        kwargs["partial"] = True
        return self.update(request, *args, **kwargs)

    def destroy(self, request, *args, **kwargs):
        services.market_delete(market=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=MarketSerializer)
    @action(detail=True, methods=["post"])
    def watch(self, request, pk=None):
        market = self.get_object()
        market = services.market_watch(exchange=market.exchange, symbol=market.symbol, timeframe=market.timeframe)
        return Response(MarketSerializer(market).data)

    @extend_schema(request=None, responses=MarketSerializer)
    @action(detail=True, methods=["post"])
    def unwatch(self, request, pk=None):
        return Response(MarketSerializer(services.market_unwatch(market=self.get_object())).data)

    @extend_schema(responses=CoverageSerializer)
    @action(detail=True, methods=["get"])
    def coverage(self, request, pk=None):
        """Stored range, candles and gaps of the market, from the data-quality ledger."""
        return Response(selectors.market_coverage(self.get_object()))

    @extend_schema(responses=DataGapSerializer(many=True))
    @action(detail=True, methods=["get"])
    def gaps(self, request, pk=None):
        qs = DataGap.objects.filter(market=self.get_object()).select_related("market").order_by("start_timestamp")
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(DataGapSerializer(page, many=True).data)

    @extend_schema(request=BackfillRequestSerializer, responses={202: QueuedSerializer})
    @action(detail=True, methods=["post"])
    def backfill(self, request, pk=None):
        """Queue a backfill of [since, until] on a worker (gaps the ledger knows are refilled)."""
        from apps.market.collector import enqueue_backfill

        market = self.get_object()
        body = BackfillRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with transaction.atomic():
            enqueue_backfill(market.exchange, market.symbol, market.timeframe, body.validated_data["since"],
                             body.validated_data.get("until"))
        return Response({"queued": True, "detail": f"backfill of {market} queued"}, status=status.HTTP_202_ACCEPTED)


class DataGapViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = DataGap.objects.select_related("market").order_by("market_id", "start_timestamp")
    serializer_class = DataGapSerializer


class CandleListView(APIView):
    @extend_schema(
        parameters=[CandleQuerySerializer],
        responses={200: CandlePage},
        description="Closed candles, oldest first: `{columns, rows, next}`; rows are "
        "[timestamp(close ms), open, high, low, close, volume]. Follow `next` (a cursor on close time) for more.",
    )
    def get(self, request):
        query = CandleQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        rows, last = selectors.candle_page_json(exchange=q["exchange"], symbol=q["symbol"], timeframe=q["timeframe"],
                                                limit=q["limit"], start=q.get("start"), end=q.get("end"),
                                                after=q.get("after"))
        next_url = None
        if last is not None:
            params = request.query_params.copy()
            params["after"] = str(last)
            next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
        body = b"".join((b'{"columns":', orjson.dumps(CANDLE_COLUMNS), b',"rows":', rows, b',"next":',
                         orjson.dumps(next_url), b"}"))
        return HttpResponse(body, content_type="application/json")
