"""`BlockingStrategy` (registry name "h7b_blocking_rsi"): an rsi whose compute blocks until the task is interrupted.

Used to reach a worker's soft time limit without timing anything: the computation never finishes on its own (a cap of
120 s only guards against a hung suite), so the soft limit set for that worker is what ends it. Registered in the
worker through TRADEBOT_STRATEGIES="tests.apps.backtest.blocking_strategy.BlockingStrategy".
"""

from __future__ import annotations

import time

GUARD_SECONDS = 120.0


def _make_blocking():
    from apps.bots.strategies.registry import get_strategy_class

    base = get_strategy_class("rsi")

    class BlockingStrategy(base):
        name = "h7b_blocking_rsi"

        def compute(self, *args, **kwargs):
            deadline = time.monotonic() + GUARD_SECONDS
            while time.monotonic() < deadline:
                time.sleep(0.05)  # the worker's soft time limit raises SoftTimeLimitExceeded here
            raise RuntimeError(f"BlockingStrategy was not interrupted within {GUARD_SECONDS:.0f} s")

    return BlockingStrategy


def _make_stubborn():
    from celery.exceptions import SoftTimeLimitExceeded

    base = _make_blocking()

    class StubbornStrategy(base):
        """Ignores the soft time limit and keeps blocking: only the hard limit (the worker kills it) ends it."""

        name = "h7b_stubborn_rsi"

        def compute(self, *args, **kwargs):
            deadline = time.monotonic() + GUARD_SECONDS
            while time.monotonic() < deadline:
                try:
                    time.sleep(0.05)
                except SoftTimeLimitExceeded:
                    continue
            raise RuntimeError(f"StubbornStrategy was not killed within {GUARD_SECONDS:.0f} s")

    return StubbornStrategy


_FACTORIES = {"BlockingStrategy": _make_blocking, "StubbornStrategy": _make_stubborn}


def __getattr__(name: str):
    """Built lazily: the strategy base class is only importable once Django is set up."""
    if name in _FACTORIES:
        cls = _FACTORIES[name]()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
