from django.urls import path

from tradebot.dashboard import views

app_name = "dashboard"
urlpatterns = [
    path("", views.fleet, name="fleet"),
    path("markets/<int:pk>/", views.market, name="market"),
    path("bots/<int:pk>/", views.bot, name="bot"),
    path("bots/<int:pk>/events/", views.bot_events, name="bot-events"),
    path("runs/<int:pk>/", views.run, name="run"),
    path("sweeps/<int:pk>/", views.sweep, name="sweep"),
    path("walkforwards/<int:pk>/", views.walkforward, name="walkforward"),
]
