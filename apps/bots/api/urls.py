from rest_framework.routers import DefaultRouter

from apps.bots.api.views import BotViewSet

router = DefaultRouter()
router.register("bots", BotViewSet)
urlpatterns = router.urls
