"""Strategies the real-worker fleet tests register in worker processes (TRADEBOT_STRATEGIES)."""

from __future__ import annotations

from apps.bots.strategies.base import Param
from apps.bots.strategies.registry import register
from apps.bots.strategies.sma_cross import SmaCross


@register
class AlwaysRaises(SmaCross):
    """sma_cross whose compute always raises (a broken user strategy)."""

    name = "h8_always_raises"
    params = (Param("fast", int, 5, min=1), Param("slow", int, 20, min=2))

    def compute(self, *args, **kwargs):
        raise RuntimeError("h8 test strategy: broken on purpose")
