from django.urls import path
from rest_framework.routers import DefaultRouter

from apps.bots.api.views import BotViewSet, FleetProfitView, MarketPerformanceView

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("bots", BotViewSet)
urlpatterns = [
    path("profit/", FleetProfitView.as_view(), name="fleet-profit"),
    path("performance/", MarketPerformanceView.as_view(), name="market-performance"),
    *router.urls,
]
