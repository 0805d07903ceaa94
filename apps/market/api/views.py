"""Market API. The candle list is the hot path: it skips the ModelSerializer (4x slower per page, see
bench figures in the design) and streams plain rows from the (symbol, timeframe, timestamp) index with a cursor."""

from __future__ import annotations

import orjson
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.views import APIView

from apps.market.api.serializers import CandleQuerySerializer, DataGapSerializer, MarketSerializer
from apps.market.models import Candle, DataGap, Market

CANDLE_COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]


class MarketViewSet(viewsets.ModelViewSet):
    """Markets the collector knows; set `watched` to collect one on every beat round."""

    queryset = Market.objects.all()
    serializer_class = MarketSerializer


class DataGapViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = DataGap.objects.select_related("market")
    serializer_class = DataGapSerializer


class CandleListView(APIView):
    @extend_schema(
        parameters=[CandleQuerySerializer],
        responses={200: dict},
        description="Closed candles, oldest first: `{columns, rows, next}`; rows are "
        "[timestamp(close ms), open, high, low, close, volume]. Follow `next` (a cursor on close time) for more.",
    )
    def get(self, request):
        query = CandleQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        qs = Candle.objects.filter(exchange=q["exchange"], symbol=q["symbol"], timeframe=q["timeframe"])
        if "start" in q:
            qs = qs.filter(timestamp__gte=q["start"])
        if "end" in q:
            qs = qs.filter(timestamp__lte=q["end"])
        if "after" in q:
            qs = qs.filter(timestamp__gt=q["after"])
        limit = q["limit"]
        rows = list(qs.order_by("timestamp").values_list(*CANDLE_COLUMNS)[: limit + 1])
        next_url = None
        if len(rows) > limit:
            rows = rows[:limit]
            params = request.query_params.copy()
            params["after"] = str(rows[-1][0])
            next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
        body = orjson.dumps({"columns": CANDLE_COLUMNS, "rows": rows, "next": next_url})
        return HttpResponse(body, content_type="application/json")
