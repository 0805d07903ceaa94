from rest_framework.routers import DefaultRouter

from apps.backtest.api.views import BacktestRunViewSet, StudyViewSet, SweepViewSet, WalkForwardViewSet

router = DefaultRouter()
router.include_root_view = False
router.register("runs", BacktestRunViewSet, basename="backtest-run")
router.register("sweeps", SweepViewSet, basename="sweep")
router.register("walkforwards", WalkForwardViewSet, basename="walkforward")
router.register("studies", StudyViewSet, basename="study")
urlpatterns = router.urls
