from django.apps import AppConfig


class TradebotConfig(AppConfig):
    """The project itself as an app: commands that drive all three apps (`manage.py demo`) live here."""

    name = "tradebot"
    verbose_name = "tradebot"
