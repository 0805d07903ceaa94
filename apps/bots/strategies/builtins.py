"""Imports every built-in strategy module so each registers itself."""

from apps.bots.strategies import bollinger, ema_cross, macd, rsi, sma_cross  # noqa: F401
