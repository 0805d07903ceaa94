"""/api/v1/: every resource of the three apps plus auth, health, schema and offline docs."""

from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from tradebot.api.auth import TokenView
from tradebot.api.health import HealthView

urlpatterns = [
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("health/", HealthView.as_view(), name="api-health"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The docs pages are for people: a session login (redirect to the admin login), then the offline UI.
    path("docs/", login_required(SpectacularSwaggerView.as_view(url_name="schema")), name="api-docs"),
    path("redoc/", login_required(SpectacularRedocView.as_view(url_name="schema")), name="api-redoc"),
    path("market/", include("apps.market.api.urls")),
    path("backtest/", include("apps.backtest.api.urls")),
    path("", include("apps.bots.api.urls")),
]
