from rest_framework.routers import DefaultRouter

from apps.backtest.api.views import BacktestRunViewSet, SweepViewSet, WalkForwardViewSet

router = DefaultRouter()
router.register("runs", BacktestRunViewSet, basename="backtest-run")
router.register("sweeps", SweepViewSet, basename="sweep")
router.register("walkforwards", WalkForwardViewSet, basename="walkforward")
urlpatterns = router.urls
