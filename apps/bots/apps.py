from django.apps import AppConfig


def load_configured_strategies() -> None:
    """Register the user strategies named in settings.TRADEBOT_STRATEGIES and those in the `*.py` files of
    settings.TRADEBOT_STRATEGIES_DIR (the registry itself never reads settings)."""
    from django.conf import settings

    from apps.bots.strategies.registry import load_user_strategies

    load_user_strategies(list(getattr(settings, "TRADEBOT_STRATEGIES", [])),
                         folder=getattr(settings, "TRADEBOT_STRATEGIES_DIR", None))


class BotsConfig(AppConfig):
    name = "apps.bots"
    label = "bots"
    verbose_name = "Bots"

    def ready(self) -> None:
        from apps.bots import receivers  # noqa: F401 - connects the candle -> tick receiver

        load_configured_strategies()
