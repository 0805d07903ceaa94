"""Backtest reads: runs, sweeps with progress, sweep results ranked (for the API, admin and commands)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet, Sum

from apps.backtest.engine.ranking import rank_results
from apps.backtest.models import BacktestRun, Study, Sweep, SweepResult, WalkForward


def runs(*, strategy: str | None = None, status: str | None = None, sweep_id: int | None = None) -> QuerySet:
    qs = BacktestRun.objects.all()
    if strategy:
        qs = qs.filter(strategy=strategy)
    if status:
        qs = qs.filter(status=status)
    if sweep_id:
        qs = qs.filter(sweep_id=sweep_id)
    return qs


def sweeps(*, strategy: str | None = None, status: str | None = None) -> QuerySet:
    qs = Sweep.objects.all()
    if strategy:
        qs = qs.filter(strategy=strategy)
    if status:
        qs = qs.filter(status=status)
    return qs


def walkforwards(*, strategy: str | None = None, status: str | None = None) -> QuerySet:
    qs = WalkForward.objects.all()
    if strategy:
        qs = qs.filter(strategy=strategy)
    if status:
        qs = qs.filter(status=status)
    return qs


def sweep_progress(sweep: Sweep) -> dict[str, Any]:
    """What a watcher needs while the sweep runs: counts, fraction done, status."""
    return {
        "id": sweep.pk,
        "status": sweep.status,
        "total": sweep.total,
        "completed": sweep.completed,
        "failed": sweep.failed,
        "progress": round(sweep.progress, 4),
    }


def sweep_compute_seconds(sweep_id: int) -> float:
    """Sum of per-set compute times measured inside the tasks."""
    value = SweepResult.objects.filter(sweep_id=sweep_id).aggregate(s=Sum("compute_seconds"))["s"]
    return float(value or 0.0)


def sweep_results(sweep: Sweep, *, ranked: bool = True, metric: str | None = None) -> list[dict[str, Any]]:
    """All results of a sweep; ranked by the sweep's (or a given) metric, failed ones last with their reason."""
    rows = list(SweepResult.objects.filter(sweep_id=sweep.pk)
                .values("index", "parameters", "metrics", "error", "compute_seconds", "detail_report"))
    if not ranked:
        return rows
    return rank_results(rows, metric or sweep.metric)


def studies(*, strategy: str | None = None, status: str | None = None) -> QuerySet:
    qs = Study.objects.all()
    if strategy:
        qs = qs.filter(strategy=strategy)
    if status:
        qs = qs.filter(status=status)
    return qs


def study_trials(study: Study) -> list[dict[str, Any]]:
    """Every finished trial best first (failed last, with the reason), then the pending ones."""
    from apps.backtest.optimize import ranking

    ranked = ranking(study, None)
    pending = [{"index": t.number, "parameters": t.parameters, "metrics": {}, "error": "", "value": None,
                "state": "pending"} for t in study.trials.filter(state="pending")]
    return [{"number": r["index"], "parameters": r["parameters"], "value": r["value"], "metrics": r["metrics"],
             "error": r["error"], "rank": r.get("rank")} for r in ranked] + [
        {"number": p["index"], "parameters": p["parameters"], "value": None, "metrics": {}, "error": "",
         "rank": None} for p in pending]
