"""Imports every built-in strategy module so each registers itself."""

from apps.bots.strategies import sma_cross  # noqa: F401
