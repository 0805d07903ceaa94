from django.urls import path
from rest_framework.routers import DefaultRouter

from apps.market.api.views import CandleListView, DataGapViewSet, MarketViewSet

router = DefaultRouter()
router.include_root_view = False
router.register("markets", MarketViewSet)
router.register("gaps", DataGapViewSet)

urlpatterns = [path("candles/", CandleListView.as_view(), name="candle-list"), *router.urls]
