from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from tradebot.api.views import redirect_to_v1

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("tradebot.api.urls")),
    path("dashboard/", include("tradebot.dashboard.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Pre-v1 paths (/api/bots/, /api/market/..., /api/backtest/..., /api/docs/) answer 308 to the same v1 path.
    re_path(r"^api/(?!v1/)(?P<rest>.*)$", redirect_to_v1),
]

handler404 = "tradebot.api.views.not_found"
handler500 = "tradebot.api.views.server_failure"
