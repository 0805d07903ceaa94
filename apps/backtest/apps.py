from django.apps import AppConfig


class BacktestConfig(AppConfig):
    name = "apps.backtest"
    label = "backtest"
    verbose_name = "Backtests"
