"""Ranking sweep results by a metric (pure: no Django): best first, failed last, deterministic ties."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

# Metrics where smaller is better; every other metric ranks descending. A leading "-" on the metric flips the order.
# Every name is a key of metrics.METRIC_KEYS (a test checks it).
LOWER_IS_BETTER = frozenset({"max_drawdown_duration_bars", "max_drawdown_duration_ms", "longest_drawdown_bars",
                             "longest_drawdown_ms", "fees_paid", "volatility_pct", "max_consecutive_losses",
                             "avg_holding_time_ms", "max_holding_time_ms", "avg_holding_bars", "max_holding_bars"})


def metric_value(result: Mapping[str, Any], metric: str) -> float | None:
    metrics = result.get("metrics") or {}
    value = metrics.get(metric.lstrip("-"))
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def rank_results(results: Iterable[Mapping[str, Any]], metric: str = "sharpe",
                 top_k: int | None = None) -> list[dict[str, Any]]:
    """Best first by `metric` (descending, ascending for LOWER_IS_BETTER or a leading '-'); failed/None last.

    Ties keep sweep index order, so the ranking is deterministic whatever order the chunks finished in.
    """
    name = metric.lstrip("-")
    ascending = (name in LOWER_IS_BETTER) != metric.startswith("-")
    rows = [dict(r) for r in results]

    def key(r: Mapping[str, Any]):
        v = metric_value(r, name)
        missing = v is None or bool(r.get("error"))
        return (missing, 0.0 if v is None else (v if ascending else -v), int(r.get("index", 0)))

    rows.sort(key=key)
    ranked = []
    for rank, r in enumerate(rows[: top_k if top_k else None], start=1):
        r["rank"] = rank
        r["value"] = metric_value(r, name)
        ranked.append(r)
    return ranked
