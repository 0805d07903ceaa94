from django.apps import AppConfig


class BotsConfig(AppConfig):
    name = "apps.bots"
    label = "bots"
    verbose_name = "Bots"

    def ready(self) -> None:
        from apps.bots import receivers  # noqa: F401 - connects the candle -> tick receiver
        from apps.bots.strategies.registry import load_user_strategies

        load_user_strategies()
