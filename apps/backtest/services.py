"""Backtest writes: create runs/sweeps/walk-forwards, execute them, store results. Tasks call these; so do commands.

Row creation and enqueueing happen together: the Celery work is sent with `transaction.on_commit`, so a worker never
looks for a row that is not committed yet. Candle loading lives here too (DB via apps.market.selectors, or a CSV
file through apps.market.csvio) so a task loads its data once and passes arrays to the pure engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.backtest.engine.chunk import run_chunk
from apps.backtest.engine.metrics import jsonable
from apps.backtest.engine.ranking import rank_results
from apps.backtest.engine.space import SweepSpaceError, expand_grid, random_samples, split_chunks, validate_param_sets
from apps.backtest.models import BacktestRun, Status, Study, Sweep, SweepResult, WalkForward
from apps.bots.trading.candles import CandleArrays
from apps.common.errors import ApplicationError
from apps.market.timeframes import format_ms, timeframe_ms
from apps.market.validation import CANDLE_COLUMNS, clip_close_times

logger = logging.getLogger(__name__)


class BacktestInputError(ApplicationError):
    """Bad user input for a run/sweep (unknown strategy, bad parameters, bad space): one readable line."""


# Bounds of one sweep request (API, admin and commands alike): documented in the README and the API schema.
MAX_SWEEP_SETS = 10_000  # parameter sets per sweep
MAX_SWEEP_CHUNKS = 500  # chunk tasks per sweep (sets / chunk_size, rounded up)
MAX_TOP_K = 1_000


def check_sweep_request(*, total: int, chunk_size: int, top_k: int, metric: str, seed: int | None = None,
                        start: int | None = None, end: int | None = None) -> None:
    """Every bound and name a sweep must respect, checked before anything is stored or queued."""
    from apps.backtest.engine.metrics import METRIC_KEYS

    if chunk_size <= 0:
        raise BacktestInputError(f"chunk size must be positive, got {chunk_size}", field="chunk_size")
    if total > MAX_SWEEP_SETS:
        raise BacktestInputError(f"{total} parameter sets: at most {MAX_SWEEP_SETS} per sweep", field="grid")
    chunks = -(-total // chunk_size)
    if chunks > MAX_SWEEP_CHUNKS:
        raise BacktestInputError(f"{chunks} chunks of {chunk_size}: at most {MAX_SWEEP_CHUNKS} chunks per sweep "
                                 f"(raise chunk_size to at least {-(-total // MAX_SWEEP_CHUNKS)})", field="chunk_size")
    if not 1 <= top_k <= MAX_TOP_K:
        raise BacktestInputError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}", field="top_k")
    if metric.lstrip("-") not in METRIC_KEYS:
        raise BacktestInputError(f"unknown metric {metric!r}: expected one of {', '.join(METRIC_KEYS)}",
                                 field="metric")
    if seed is not None and not 0 <= seed < 2**32:
        raise BacktestInputError(f"seed must be between 0 and {2**32 - 1}, got {seed}", field="seed")
    if start is not None and end is not None and end < start:
        raise BacktestInputError("end must not be before start", field="end")


def grid_size(grid: Mapping[str, Any]) -> int:
    """Number of sets a grid expands to, without expanding it (a huge grid is refused before it is built)."""
    n = 1
    for values in grid.values():
        n *= len(values) if isinstance(values, list | tuple) else 1
    return n


# --- strategies and rules ---------------------------------------------------------------------------------------

def resolve_strategy(name: str) -> type:
    """Strategy class by registry name; user strategies (settings.TRADEBOT_STRATEGIES) are loaded on a miss."""
    from apps.bots.apps import load_configured_strategies
    from apps.bots.strategies.registry import UnknownStrategyError, get_strategy_class

    try:
        return get_strategy_class(name)
    except UnknownStrategyError:
        load_configured_strategies()
        try:
            return get_strategy_class(name)
        except UnknownStrategyError as exc:
            raise BacktestInputError(str(exc), field="strategy") from None


def build_strategy(name: str, parameters: Mapping[str, Any] | None):
    cls = resolve_strategy(name)
    if parameters is not None and not isinstance(parameters, Mapping):
        raise BacktestInputError(f"parameters must be a JSON object {{name: value}}, got {type(parameters).__name__}",
                                 field="parameters")
    try:
        return cls(dict(parameters or {}))
    except ApplicationError as exc:  # ParameterError: names the strategy and the parameter (parameters.<name>)
        raise BacktestInputError(str(exc), field=exc.field or "parameters") from None
    except (ValueError, TypeError) as exc:
        raise BacktestInputError(f"strategy {name!r}: {exc}", field="parameters") from None


def build_rules(**kwargs: Any):
    """FillRules from keyword arguments; None values fall back to the engine's defaults."""
    from apps.bots.trading.fills import FillRules

    clean = {k: v for k, v in kwargs.items() if v is not None or k in ("stop_loss", "take_profit")}
    try:
        return FillRules(**clean)
    except ApplicationError as exc:
        raise BacktestInputError(f"fill rules: {exc}", field=exc.field) from None
    except (ValueError, TypeError) as exc:
        raise BacktestInputError(f"fill rules: {exc}") from None


def validate_range(start: int | None, end: int | None) -> None:
    """Close times (ms): both >= 0 when given, end not before start."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise BacktestInputError(f"{name} must be a close time in ms UTC (an integer >= 0), got {value!r}",
                                     field=name)
    if start is not None and end is not None and end < start:
        raise BacktestInputError(f"end ({end}) must not be before start ({start})", field="end")


def validate_metric(metric: str) -> str:
    """A metric to rank by: a name from the engine's metrics (METRIC_KEYS), optionally '-' for ascending."""
    from apps.backtest.engine.metrics import METRIC_KEYS

    name = metric.lstrip("-") if isinstance(metric, str) else metric
    if name not in METRIC_KEYS:
        raise BacktestInputError(f"unknown metric {metric!r}: expected one of {', '.join(METRIC_KEYS)}",
                                 field="metric")
    return metric


def validate_market_input(*, exchange: str, symbol: str, timeframe: str) -> None:
    timeframe_ms(timeframe)  # TimeframeError names the field
    for name, value in (("exchange", exchange), ("symbol", symbol)):
        if not isinstance(value, str) or not 1 <= len(value) <= 32:
            raise BacktestInputError(f"{name} must be 1..32 characters, got {value!r}", field=name)


def rules_for(obj: Any):
    return build_rules(**obj.rules_kwargs())


# --- data ---------------------------------------------------------------------------------------------------------

@dataclass
class LoadedData:
    df: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def load_csv_frame(path: str, *, timeframe: str, time_label: str, start: int | None = None,
                   end: int | None = None) -> LoadedData:
    """Candles of a CSV file (no database involved), validated: rejected rows become warnings, not failures."""
    from apps.market.csvio import read_candle_csv

    df = read_candle_csv(path, timeframe=timeframe, time_label=time_label)
    df = clip_close_times(df, start, end)
    return _validated(df, market=str(path), timeframe=timeframe)


def load_db_frame(*, exchange: str, symbol: str, timeframe: str, start: int | None = None,
                  end: int | None = None) -> LoadedData:
    """Stored candles plus ledger gaps (apps.market.selectors.gaps_in_range) in the range as warnings."""
    from apps.market.selectors import candle_frame, gaps_in_range

    df = candle_frame(exchange=exchange, symbol=symbol, timeframe=timeframe, start=start, end=end)
    warnings: list[str] = []
    if len(df):
        lo = int(df["timestamp"].iloc[0]) if start is None else start
        hi = int(df["timestamp"].iloc[-1]) if end is None else end
        for gap in gaps_in_range(exchange, symbol, timeframe, lo, hi):
            warnings.append(
                f"ledger gap ({gap.status}): {gap.missing} {timeframe} candles missing "
                f"from {format_ms(gap.start_timestamp)} to {format_ms(gap.end_timestamp)} UTC"
            )
    return LoadedData(df, warnings)


def load_npy_frame(path: str, *, start: int | None = None, end: int | None = None) -> LoadedData:
    """A binary candle snapshot: a structured .npy (fields timestamp, open, high, low, close, volume; close labels).

    Memory-mapped, so many worker processes read one file through the page cache (used by bench/sweep.py for 1M
    candles, where a CSV parse or a DB fetch per task would dominate). Written by our own code, so not re-validated.
    """
    arr = np.load(path, mmap_mode="r")
    missing = [c for c in CANDLE_COLUMNS if c not in (arr.dtype.names or ())]
    if missing:
        raise BacktestInputError(f"{path}: not a candle snapshot, missing field(s) {', '.join(missing)}")
    df = pd.DataFrame({c: np.array(arr[c], dtype=np.int64 if c == "timestamp" else np.float64)
                       for c in CANDLE_COLUMNS})
    return LoadedData(clip_close_times(df, start, end))


def load_data(obj: Any) -> LoadedData:
    """Candles for a run/sweep/walk-forward row (its data file or its stored market)."""
    if obj.data_file and obj.data_file.endswith(".npy"):
        return load_npy_frame(obj.data_file, start=obj.start, end=obj.end)
    if obj.data_file:
        return load_csv_frame(obj.data_file, timeframe=obj.timeframe, time_label=obj.time_label or "close",
                              start=obj.start, end=obj.end)
    return load_db_frame(exchange=obj.exchange, symbol=obj.symbol, timeframe=obj.timeframe, start=obj.start,
                         end=obj.end)


def _validated(df: pd.DataFrame, *, market: str, timeframe: str) -> LoadedData:
    from apps.market.validation import validate_candles

    valid, rejected = validate_candles(df, market=market, timeframe=timeframe)
    warnings = []
    if rejected:
        warnings.append(f"{len(rejected)} candles rejected by validation, first: {rejected[0]}")
    return LoadedData(valid.reset_index(drop=True), warnings)


def merge_warnings(*lists: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for lst in lists:
        for w in lst or []:
            seen.setdefault(str(w), None)
    return list(seen)


# --- single runs --------------------------------------------------------------------------------------------------

def detail_source(kind: str, *, exchange: str, symbol: str, candle_ts: np.ndarray, timeframe: str):
    """A DetailSource reading, for the asked candles only, the stored 1m candles or raw trades of their intervals
    (apps.bots.selectors.stored_detail_source: the one replays use too)."""
    from apps.bots.selectors import stored_detail_source
    from apps.bots.trading.detail import DETAIL_SOURCES

    if kind not in DETAIL_SOURCES:
        raise BacktestInputError(f"detail must be one of {', '.join(DETAIL_SOURCES)}, got {kind!r}", field="detail")
    return stored_detail_source(kind, exchange=exchange, symbol=symbol, candle_ts=candle_ts, timeframe=timeframe)


def validate_detail(detail: str | None, *, data_file: str | None) -> None:
    """--detail is '', '1m' or 'trades' and reads stored data: a run or sweep over a CSV file cannot have it."""
    from apps.bots.trading.detail import DETAIL_SOURCES

    if not detail:
        return
    if detail not in DETAIL_SOURCES:
        raise BacktestInputError(f"detail must be one of {', '.join(DETAIL_SOURCES)}, got {detail!r}", field="detail")
    if data_file:
        raise BacktestInputError("detail reads the stored 1m candles or raw trades: it needs a stored market "
                                 "(exchange/symbol), not a file", field="detail")


def stored_detail(obj: Any, candle_ts: np.ndarray) -> tuple[str, Any] | None:
    """(kind, DetailSource) of a stored run or sweep with `detail`, None without: the one place both build it."""
    if not getattr(obj, "detail", ""):
        return None
    validate_detail(obj.detail, data_file=obj.data_file)
    return obj.detail, detail_source(obj.detail, exchange=obj.exchange, symbol=obj.symbol, candle_ts=candle_ts,
                                     timeframe=obj.timeframe)


def frame_detail_source(detail_df: pd.DataFrame, *, candle_ts: np.ndarray, timeframe: str):
    """A DetailSource over a 1m candle frame in memory (the --data path with --detail-data FILE)."""
    from apps.bots.trading.detail import frame_detail_source as in_memory

    cols = tuple(detail_df[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close"))
    return in_memory("1m", detail_df["timestamp"].to_numpy(dtype=np.int64), cols, candle_ts, timeframe_ms(timeframe))


def run_in_memory(df: pd.DataFrame, *, strategy: str, parameters: Mapping[str, Any] | None, timeframe: str,
                  rules_kwargs: Mapping[str, Any], extra_warnings: list[str] | None = None,
                  detail: tuple[str, Any] | None = None):
    """A backtest without the database (the --data path): returns the engine's BacktestResult. `detail` =
    (kind, DetailSource) for intrabar stop-loss/take-profit resolution."""
    from apps.backtest.engine.run import run_backtest

    strat = build_strategy(strategy, parameters)
    rules = build_rules(**rules_kwargs)
    if len(df) == 0:
        raise BacktestInputError("no candles in the selected data/range")
    result = run_backtest(df, strat, rules, timeframe, detail=detail)
    if extra_warnings:
        result.warnings = merge_warnings(list(extra_warnings), list(result.warnings))
    return result


def create_run(*, strategy: str, parameters: Mapping[str, Any] | None = None, enqueue: bool = True,
               sweep: Sweep | None = None, **data: Any) -> BacktestRun:
    """Validate the strategy and parameters now (a bad run is never stored), store it pending, enqueue on commit."""
    strat = build_strategy(strategy, parameters)
    check_run_input(data)
    run = BacktestRun.objects.create(strategy=strategy, parameters=jsonable(dict(strat.parameters)),
                                     sweep=sweep, **data)
    if enqueue:
        from apps.backtest.tasks import fail_run_task, run_backtest_task

        # The error callback records failures the task itself cannot (the worker killed it at the hard time limit).
        transaction.on_commit(lambda: run_backtest_task.apply_async(
            (run.pk,), link_error=fail_run_task.s(run_id=run.pk)))
    return run


def check_run_input(data: Mapping[str, Any]) -> None:
    """The checks a run and a sweep share on their data and fill rules (before anything is stored): the fill rules,
    the close-time range, --detail, and the stored market (a CSV run names none)."""
    build_rules(**_rules_only(data))
    validate_range(data.get("start"), data.get("end"))
    validate_detail(data.get("detail"), data_file=data.get("data_file"))
    if not data.get("data_file"):
        validate_market_input(exchange=data.get("exchange"), symbol=data.get("symbol"),
                              timeframe=data.get("timeframe"))


def _rules_only(data: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("fee", "slippage", "initial_balance", "fraction", "stop_loss", "take_profit")
    return {k: data[k] for k in keys if k in data}


def execute_run(run_id: int) -> BacktestRun:
    """Load, run (vectorized engine), store metrics/trades/equity; a failure is stored on the row and re-raised."""
    from apps.backtest.engine.run import run_backtest

    run = BacktestRun.objects.get(pk=run_id)
    if run.status == Status.DONE:
        return run  # redelivered task: the result is already stored
    BacktestRun.objects.filter(pk=run_id).update(status=Status.RUNNING, started_at=timezone.now(), progress=0.0,
                                                 error="")
    t0 = time.perf_counter()
    try:
        data = load_data(run)
        if len(data.df) == 0:
            raise BacktestInputError(f"no candles for {run.market_label} in the selected range")
        BacktestRun.objects.filter(pk=run_id).update(progress=0.3)
        detail = stored_detail(run, data.df["timestamp"].to_numpy())
        result = run_backtest(data.df, build_strategy(run.strategy, run.parameters), rules_for(run), run.timeframe,
                              detail=detail)
        payload = jsonable(result.to_dict())
        curve = jsonable(result.equity_curve())  # keeps the first/last candle and each bucket's low and high
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the run, then re-raised for Celery
        BacktestRun.objects.filter(pk=run_id).update(status=Status.FAILED, error=f"{type(exc).__name__}: {exc}",
                                                     finished_at=timezone.now(),
                                                     duration=time.perf_counter() - t0)
        raise
    BacktestRun.objects.filter(pk=run_id).update(
        status=Status.DONE, progress=1.0, metrics=payload["metrics"], trades=payload["trades"],
        open_trade=payload["open_trade"], final_equity=payload["final_equity"], equity_curve=curve,
        warnings=merge_warnings(data.warnings, payload.get("warnings", [])), finished_at=timezone.now(),
        detail_report=payload.get("detail"),
        duration=time.perf_counter() - t0,
    )
    return BacktestRun.objects.get(pk=run_id)


# --- sweeps -------------------------------------------------------------------------------------------------------

def plan_param_sets(strategy: str, *, grid: Mapping[str, Any] | None = None, n_random: int | None = None,
                    space: Mapping[str, Any] | None = None, seed: int | None = None) -> list[dict[str, Any]]:
    """The sweep's parameter sets, in index order. Unknown parameter names are input errors (the whole sweep)."""
    cls = resolve_strategy(strategy)
    known = [p.name for p in cls.param_space()]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise BacktestInputError(f"seed must be an integer in [0, 2**63), got {seed!r}", field="seed")
    where = "grid" if grid is not None else "space"
    if grid is not None and (not isinstance(grid, Mapping) or not grid):
        raise BacktestInputError("grid must be a non-empty JSON object {parameter: [values, ...]}", field="grid")
    if space is not None and not isinstance(space, Mapping):
        raise BacktestInputError("space must be a JSON object {parameter: [min, max]}", field="space")
    try:
        if grid is not None:
            unknown = [k for k in grid if k not in known]
            if unknown:
                raise BacktestInputError(
                    f"unknown parameter {unknown[0]!r} for strategy {strategy!r}: expected one of {', '.join(known)}",
                    field=f"grid.{unknown[0]}",
                )
            sets = expand_grid(grid)
        elif n_random:
            sets = random_samples(cls, n_random, seed=seed, space=space)
        else:
            raise BacktestInputError("a sweep needs a grid or a number of random samples", field="grid")
    except SweepSpaceError as exc:
        raise BacktestInputError(str(exc), field=exc.field or where) from None
    checked = validate_param_sets(cls, sets)
    if checked and all(c["error"] for c in checked):
        raise BacktestInputError(f"every parameter set is invalid, e.g. {checked[0]['parameters']}: "
                                 f"{checked[0]['error']}", field=where)
    return sets


def create_sweep(*, strategy: str, grid: Mapping[str, Any] | None = None, n_random: int | None = None,
                 space: Mapping[str, Any] | None = None, seed: int | None = None, metric: str = "sharpe",
                 top_k: int = 10, chunk_size: int = 25, enqueue: bool = True, **data: Any) -> Sweep:
    """Check the bounds, store the sweep (total = number of sets) and, on commit, enqueue `dispatch_sweep_task`:
    a worker fans out chord(group(chunks), finish) — never the web process."""
    if grid is not None and isinstance(grid, Mapping):
        check_sweep_request(total=grid_size(grid), chunk_size=chunk_size, top_k=top_k, metric=metric, seed=seed,
                            start=data.get("start"), end=data.get("end"))
    elif n_random is not None:
        check_sweep_request(total=n_random, chunk_size=chunk_size, top_k=top_k, metric=metric, seed=seed,
                            start=data.get("start"), end=data.get("end"))
    if grid is None and seed is None:
        import secrets

        seed = secrets.randbelow(2**32)  # stored, so the dispatching worker draws the same sets
    sets = plan_param_sets(strategy, grid=grid, n_random=n_random, space=space, seed=seed)
    check_sweep_request(total=len(sets), chunk_size=chunk_size, top_k=top_k, metric=metric, seed=seed,
                        start=data.get("start"), end=data.get("end"))
    check_run_input(data)
    mode = Sweep.Mode.GRID if grid is not None else Sweep.Mode.RANDOM
    sweep = Sweep.objects.create(
        strategy=strategy, mode=mode, space=jsonable(dict(grid if grid is not None else (space or {}))),
        n_samples=n_random, seed=seed, metric=metric, top_k=top_k, chunk_size=chunk_size, total=len(sets), **data,
    )
    if enqueue:
        from apps.backtest.tasks import dispatch_sweep_task

        transaction.on_commit(lambda: dispatch_sweep_task.delay(sweep.pk))
    return sweep


def sweep_param_sets(sweep: Sweep) -> list[dict[str, Any]]:
    """The stored sweep's parameter sets again (grid, or random with its stored seed): same sets, same order."""
    if sweep.mode == Sweep.Mode.GRID:
        return plan_param_sets(sweep.strategy, grid=sweep.space)
    return plan_param_sets(sweep.strategy, n_random=sweep.n_samples, space=sweep.space or None, seed=sweep.seed)


def dispatch_stored_sweep(sweep_id: int):
    """Worker side of create_sweep: plan the sets, split them in chunks and send the chord. Failures mark it failed."""
    sweep = Sweep.objects.get(pk=sweep_id)
    if sweep.status != Status.PENDING:
        return None  # redelivered: already dispatched
    try:
        sets = sweep_param_sets(sweep)
        chunks = split_chunks([[i, s] for i, s in enumerate(jsonable(sets))], sweep.chunk_size)
        return dispatch_sweep(sweep_id, chunks)
    except Exception as exc:
        fail_sweep(sweep_id, f"dispatch failed: {type(exc).__name__}: {exc}")
        raise


def dispatch_sweep(sweep_id: int, chunks: list[list[Any]]):
    """chord(group(sweep_chunk_task per chunk), finish_sweep_task) with an error callback that marks it failed."""
    now = timezone.now()
    Sweep.objects.filter(pk=sweep_id).update(status=Status.RUNNING, started_at=now, progress_at=now)
    return _send_chord(sweep_id, list(enumerate(chunks)))


def _send_chord(sweep_id: int, chunks: list[tuple[int, list[Any]]]):
    from celery import chord, group

    from apps.backtest.tasks import fail_sweep_task, finish_sweep_task, sweep_chunk_task

    header = group(sweep_chunk_task.s(sweep_id, i, chunk) for i, chunk in chunks)
    body = finish_sweep_task.s(sweep_id).on_error(fail_sweep_task.s(sweep_id=sweep_id))
    return chord(header)(body)


def execute_sweep_chunk(sweep_id: int, chunk_index: int, param_sets: list[Any],
                        data: LoadedData | None = None) -> dict[str, Any]:
    """Run one chunk (data loaded once), store its SweepResults idempotently, advance progress by F() increments."""
    sweep = Sweep.objects.get(pk=sweep_id)
    if data is None:
        data = load_data(sweep)
    cls = resolve_strategy(sweep.strategy)
    arrays = CandleArrays.from_frame(data.df)
    detail = stored_detail(sweep, arrays.timestamp)
    if detail is not None:
        from apps.bots.trading.detail import cached_source

        detail = (detail[0], cached_source(detail[0], detail[1]))  # the chunk's sets share the rows they read
    t0 = time.perf_counter()
    results = run_chunk(arrays, cls, param_sets, rules_for(sweep), sweep.timeframe, detail=detail)
    compute = time.perf_counter() - t0
    with transaction.atomic():
        Sweep.objects.select_for_update().filter(pk=sweep_id).values_list("pk", flat=True).get()
        indexes = [r["index"] for r in results]
        existing = set(SweepResult.objects.filter(sweep_id=sweep_id, index__in=indexes)
                       .values_list("index", flat=True))
        new = [r for r in results if r["index"] not in existing]
        SweepResult.objects.bulk_create(
            [SweepResult(sweep_id=sweep_id, index=r["index"], parameters=r["parameters"], metrics=r["metrics"],
                         error=r["error"], compute_seconds=r["compute_seconds"], detail_report=r.get("detail"))
             for r in new],
            ignore_conflicts=True,
        )
        n_failed = sum(1 for r in new if r["error"])
        Sweep.objects.filter(pk=sweep_id).update(completed=F("completed") + len(new), failed=F("failed") + n_failed,
                                                 progress_at=timezone.now())
    return {"chunk": chunk_index, "count": len(results), "stored": len(new),
            "failed": sum(1 for r in results if r["error"]), "compute_seconds": compute}


def finish_sweep(sweep_id: int, chunk_summaries: list[Any] | None = None) -> Sweep:
    """Rank all stored results by the sweep's metric and keep the top K; status done."""
    sweep = Sweep.objects.get(pk=sweep_id)
    rows = list(SweepResult.objects.filter(sweep_id=sweep_id).values("index", "parameters", "metrics", "error",
                                                                      "detail_report"))
    ranking = rank_results(rows, sweep.metric, sweep.top_k)
    ranking = [{"rank": r["rank"], "index": r["index"], "parameters": r["parameters"], "value": r["value"],
                "metrics": r["metrics"], "error": r["error"],
                **({"detail": r["detail_report"]} if r.get("detail_report") is not None else {})} for r in ranking]
    missing = sweep.total - len(rows)
    error = f"{missing} parameter sets have no result" if missing > 0 else ""
    Sweep.objects.filter(pk=sweep_id).update(status=Status.DONE, ranking=jsonable(ranking),
                                             finished_at=timezone.now(), error=error)
    return Sweep.objects.get(pk=sweep_id)


MAX_SWEEP_REDISPATCHES = 3


def recover_stalled_sweeps(*, stall_s: float | None = None) -> dict[str, list[int]]:
    """Beat (recover_sweeps_task): a RUNNING sweep with no stored progress for `stall_s` (TRADEBOT_SWEEP_STALL_S) has
    lost a chunk for good (its message gone with the broker, a chunk that never reports), so its chord can never
    finish. Its missing parameter sets (those without a SweepResult) are sent again as a new chord, the stores being
    idempotent per (sweep, index) so every set counts once even if the lost chunk turns up; with none missing it is
    ranked; after MAX_SWEEP_REDISPATCHES it is failed with the reason. The stall must exceed the backtest queue's
    hard time limit plus its queueing delay, or a slow chunk is computed twice (still stored once)."""
    stall_s = float(settings.TRADEBOT_SWEEP_STALL_S if stall_s is None else stall_s)
    cutoff = timezone.now() - timedelta(seconds=stall_s)
    out: dict[str, list[int]] = {"redispatched": [], "finished": [], "failed": []}
    stalled = Q(progress_at__lt=cutoff) | Q(progress_at__isnull=True, started_at__lt=cutoff)  # (older rows)
    for sweep_id in Sweep.objects.filter(stalled, status=Status.RUNNING).values_list("pk", flat=True):
        with transaction.atomic():
            sweep = Sweep.objects.select_for_update().get(pk=sweep_id)
            if sweep.status != Status.RUNNING or (sweep.progress_at or sweep.started_at or cutoff) >= cutoff:
                continue  # progressed or finished meanwhile (beat passes are serialised by this lock)
            done = set(SweepResult.objects.filter(sweep_id=sweep_id).values_list("index", flat=True))
            missing = [[i, s] for i, s in enumerate(jsonable(sweep_param_sets(sweep))) if i not in done]
            if not missing:
                transaction.on_commit(lambda pk=sweep_id: finish_sweep(pk))
                out["finished"].append(sweep_id)
            elif sweep.redispatches >= MAX_SWEEP_REDISPATCHES:
                transaction.on_commit(lambda pk=sweep_id, n=len(missing), r=sweep.redispatches: fail_sweep(
                    pk, f"{n} parameter sets never reported after {r} re-dispatches of their chunks"))
                out["failed"].append(sweep_id)
            else:
                Sweep.objects.filter(pk=sweep_id).update(redispatches=F("redispatches") + 1,
                                                         progress_at=timezone.now())
                chunks = list(enumerate(split_chunks(missing, sweep.chunk_size)))
                transaction.on_commit(lambda pk=sweep_id, c=chunks: _send_chord(pk, c))
                logger.warning("sweep %s: no progress for %.0fs, %d parameter sets missing: chunks sent again",
                               sweep_id, stall_s, len(missing))
                out["redispatched"].append(sweep_id)
    return out


def fail_sweep(sweep_id: int, message: str) -> None:
    """Mark a sweep failed with the reason; the first reason recorded wins (a chunk's own, then the chord's)."""
    Sweep.objects.filter(pk=sweep_id).exclude(status__in=(Status.FAILED, Status.DONE)).update(
        status=Status.FAILED, error=message[:2000], finished_at=timezone.now())


def fail_run(run_id: int, message: str, *, keep_reason: bool = False) -> None:
    """Mark a run failed with the reason (e.g. its task exceeded the soft time limit); a finished run is left alone,
    and with keep_reason a run already failed keeps its first reason."""
    excluded = (Status.DONE, Status.FAILED) if keep_reason else (Status.DONE,)
    BacktestRun.objects.filter(pk=run_id).exclude(status__in=excluded).update(
        status=Status.FAILED, error=message[:2000], finished_at=timezone.now())


def run_sweep_in_process(strategy: str, param_sets: list[dict[str, Any]], df: pd.DataFrame, *, timeframe: str,
                         rules_kwargs: Mapping[str, Any], metric: str = "sharpe",
                         top_k: int | None = None) -> list[dict[str, Any]]:
    """The same sweep without Celery or the database (the --data path and the reference in tests)."""
    validate_metric(metric)
    cls = resolve_strategy(strategy)
    arrays = CandleArrays.from_frame(df)
    results = run_chunk(arrays, cls, list(enumerate(param_sets)), build_rules(**rules_kwargs),
                                     timeframe)
    return rank_results(results, metric, top_k)


# --- walk-forward -------------------------------------------------------------------------------------------------

# Bounds of one walk-forward request (API and stored commands alike): documented in the README and the API schema.
# A walk-forward is one task (every window's choice feeds the stitched account), so its whole work is bounded.
MAX_WALKFORWARD_SETS = 1_000  # parameter sets tried on every train window
MAX_WALKFORWARD_WINDOWS = 200  # train/test windows
MAX_WALKFORWARD_EVALUATIONS = 20_000  # backtests per study: sets x windows (train) + windows (test)
MAX_WALKFORWARD_CANDLES = 10_000_000  # train, test or step size


def walkforward_sizes(*, train: int | str, test: int | str, step: int | str | None,
                      timeframe: str) -> tuple[int, int, int | None]:
    """Window sizes in candles ('30d', '12h', 600 ...), each positive and bounded; errors name the field."""
    from apps.backtest.engine import walkforward as wf

    sizes = []
    for what, value in (("train", train), ("test", test), ("step", step)):
        if value is None:
            sizes.append(None)
            continue
        try:
            n = wf.to_candles(value, timeframe, what=what)
        except wf.WalkForwardError as exc:
            raise BacktestInputError(str(exc), field=what) from None
        if n > MAX_WALKFORWARD_CANDLES:
            raise BacktestInputError(f"{what} {value!r} is {n} candles: at most {MAX_WALKFORWARD_CANDLES}",
                                     field=what)
        sizes.append(n)
    return sizes[0], sizes[1], sizes[2]


def walkforward_windows(n_candles: int, train: int, test: int, step: int | None) -> int:
    """How many windows engine.walkforward.plan_windows makes over n candles, without planning them."""
    if n_candles < train + test:
        return 0
    return (n_candles - train - test) // (step or test) + 1


def check_walkforward_request(*, sets: int, windows: int | None) -> None:
    """The bounds of one walk-forward, before anything is stored (and again on the loaded data, in the worker)."""
    if sets > MAX_WALKFORWARD_SETS:
        raise BacktestInputError(f"{sets} parameter sets: at most {MAX_WALKFORWARD_SETS} per walk-forward",
                                 field="grid")
    if windows is None:
        return
    if windows > MAX_WALKFORWARD_WINDOWS:
        raise BacktestInputError(f"{windows} windows: at most {MAX_WALKFORWARD_WINDOWS} per walk-forward (raise step "
                                 f"or test, or narrow start/end)", field="step")
    if sets * windows + windows > MAX_WALKFORWARD_EVALUATIONS:
        raise BacktestInputError(f"{sets} parameter sets x {windows} windows: at most {MAX_WALKFORWARD_EVALUATIONS} "
                                 f"backtests per walk-forward (fewer sets or fewer windows)", field="grid")


def run_walkforward_in_process(strategy: str, grid: Mapping[str, Any], df: pd.DataFrame, *, timeframe: str,
                               rules_kwargs: Mapping[str, Any], train: int | str, test: int | str,
                               step: int | str | None = None, metric: str = "sharpe",
                               on_window: Any = None) -> dict[str, Any]:
    """The walk-forward without Celery or the database (the --data path; execute_walkforward computes through it)."""
    from apps.backtest.engine import walkforward as wf

    validate_metric(metric)
    sets = plan_param_sets(strategy, grid=grid)
    cls = resolve_strategy(strategy)
    n_train, n_test, n_step = walkforward_sizes(train=train, test=test, step=step, timeframe=timeframe)
    try:
        return wf.walk_forward(CandleArrays.from_frame(df), cls, sets, build_rules(**rules_kwargs),
                               timeframe, train=n_train, test=n_test, step=n_step, metric=metric,
                               on_window=on_window)
    except wf.WalkForwardError as exc:
        raise BacktestInputError(str(exc), field=exc.field) from None


def create_walkforward(*, strategy: str, grid: Mapping[str, Any], train: int | str, test: int | str,
                       step: int | str | None = None, metric: str = "sharpe", enqueue: bool = True,
                       **data: Any) -> WalkForward:
    """Check the input and the bounds, store the study pending and, on commit, enqueue `run_walkforward_task` (a
    `backtest` worker computes it, never the web process). The window count is checked on the stored candle count."""
    from apps.market.selectors import candle_count

    validate_metric(metric)
    validate_range(data.get("start"), data.get("end"))
    if not data.get("data_file"):
        validate_market_input(exchange=data.get("exchange"), symbol=data.get("symbol"),
                              timeframe=data.get("timeframe"))
    else:
        timeframe_ms(data["timeframe"])
    n_train, n_test, n_step = walkforward_sizes(train=train, test=test, step=step, timeframe=data["timeframe"])
    if isinstance(grid, Mapping):
        check_walkforward_request(sets=grid_size(grid), windows=None)  # a huge grid is refused before it is built
    sets = plan_param_sets(strategy, grid=grid)
    build_rules(**_rules_only(data))
    windows = None
    if not data.get("data_file"):
        n = candle_count(exchange=data["exchange"], symbol=data["symbol"], timeframe=data["timeframe"],
                         start=data.get("start"), end=data.get("end"))
        windows = walkforward_windows(n, n_train, n_test, n_step)
    check_walkforward_request(sets=len(sets), windows=windows)
    study = WalkForward.objects.create(strategy=strategy, space=jsonable(dict(grid)), train_size=n_train,
                                       test_size=n_test, step=n_step, metric=metric, **data)
    if enqueue:
        from apps.backtest.tasks import fail_walkforward_task, run_walkforward_task

        transaction.on_commit(lambda: run_walkforward_task.apply_async(
            (study.pk,), link_error=fail_walkforward_task.s(walkforward_id=study.pk)))
    return study


def execute_walkforward(walkforward_id: int, *, on_window: Any = None) -> WalkForward:
    """Load the study's candles, compute every window and the stitched account, store them; a failure is stored on
    the row (status failed, the reason) and re-raised. A study already done is left as it is (redelivery)."""
    study = WalkForward.objects.get(pk=walkforward_id)
    if study.status == Status.DONE:
        return study
    WalkForward.objects.filter(pk=study.pk).update(status=Status.RUNNING, error="")
    try:
        loaded = load_data(study)
        if len(loaded.df) == 0:
            raise BacktestInputError(f"no candles for {study.market_label} in the selected range")
        check_walkforward_request(sets=len(plan_param_sets(study.strategy, grid=study.space)),
                                  windows=walkforward_windows(len(loaded.df), study.train_size, study.test_size,
                                                              study.step))
        out = run_walkforward_in_process(study.strategy, study.space, loaded.df, timeframe=study.timeframe,
                                         rules_kwargs=study.rules_kwargs(), train=study.train_size,
                                         test=study.test_size, step=study.step, metric=study.metric,
                                         on_window=on_window)
    except Exception as exc:  # noqa: BLE001 - recorded on the row, then re-raised to the caller / Celery
        fail_walkforward(study.pk, f"{type(exc).__name__}: {exc}")
        raise
    out["warnings"] = merge_warnings(loaded.warnings, out.get("warnings", []))
    WalkForward.objects.filter(pk=study.pk).update(
        status=Status.DONE, windows=out["windows"], stitched_metrics=out["stitched_metrics"],
        stitched_equity=out["stitched_equity"], finished_at=timezone.now(),
        error="; ".join(out["warnings"])[:2000],
    )
    study.refresh_from_db()
    return study


def fail_walkforward(walkforward_id: int, message: str, *, keep_reason: bool = False) -> None:
    """Mark a study failed with the reason (a finished one is left alone; keep_reason keeps a first failure's)."""
    excluded = (Status.DONE, Status.FAILED) if keep_reason else (Status.DONE,)
    WalkForward.objects.filter(pk=walkforward_id).exclude(status__in=excluded).update(
        status=Status.FAILED, error=message[:2000], finished_at=timezone.now())


def create_and_run_walkforward(*, strategy: str, grid: Mapping[str, Any], train: int | str, test: int | str,
                               step: int | str | None = None, metric: str = "sharpe", on_window: Any = None,
                               **data: Any) -> WalkForward:
    """Store a walk-forward study and compute it now, in this process (the command's path; the API enqueues)."""
    study = create_walkforward(strategy=strategy, grid=grid, train=train, test=test, step=step, metric=metric,
                               enqueue=False, **data)
    return execute_walkforward(study.pk, on_window=on_window)


# --- research -> live fleet ----------------------------------------------------------------------------------------

def research_bot_config(row: Any, parameters: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The bot config (the `config/bots/*.json` shape) of one parameter set of a sweep or study: its strategy, market
    and fill rules. Validated only by the bots' own validator (apps.bots.config.parse_config)."""
    return {"name": name[:100], "strategy": row.strategy, "parameters": dict(parameters), "exchange": row.exchange,
            "symbol": row.symbol, "timeframe": row.timeframe, "initial_balance": row.initial_balance,
            "fee_rate": row.fee, "fraction": row.fraction, "slippage": row.slippage, "stop_loss": row.stop_loss,
            "take_profit": row.take_profit}


def bots_from_parameter_sets(row: Any, parameter_sets: list[Mapping[str, Any]], *, label: str, origin: str,
                             start: bool = False) -> list:
    """Paper bots for ranked parameter sets of a research row (sweep or study) on a stored market, named
    `<label>-<rank>-<param><value>...`, through the bots services (create or update by name; one validator), their
    `config_file` = `origin` ("sweep:<id>", "study:<id>"). `start`: start them (from the next closed candle). The row
    is one `research_row_for_bots` returned."""
    from apps.bots import services as bot_services
    from apps.bots.config import BotConfigError, parse_config
    from apps.common.errors import ApplicationError

    bots = []
    with transaction.atomic():
        for rank, params in enumerate(parameter_sets, start=1):
            suffix = "-".join(f"{k}{v}" for k, v in sorted(params.items()))
            config = research_bot_config(row, params, f"{label}-{rank}-{suffix}")
            try:
                parsed = parse_config(config, source=f"{label} rank {rank}")
            except BotConfigError as exc:
                raise ApplicationError(str(exc), field="parameters") from None
            bots.append(bot_services.upsert_bot_from_config(parsed, config_file=origin))
    if start:
        bots = [bot_services.start_bot(bot) for bot in bots]
    return bots


def research_row_for_bots(model: type[Sweep] | type[Study], pk: int, *, top: int) -> Sweep | Study:
    """The sweep or study whose `top` best sets become bots: it exists, `top` >= 1, and it ran on a stored market
    (errors name `<model>_id` or `top`)."""
    from apps.common.errors import ApplicationError

    kind = model._meta.model_name
    row = model.objects.filter(pk=pk).first()
    if row is None:
        raise ApplicationError(f"no {kind} #{pk}", field=f"{kind}_id")
    if top < 1:
        raise ApplicationError(f"--top must be >= 1, got {top}", field="top")
    if row.data_file or not row.exchange:
        raise ApplicationError(f"{kind} #{pk} ran on a file ({row.data_file}); bots need a stored market",
                               field=f"{kind}_id")
    return row


def bots_from_sweep(*, sweep_id: int, top: int, start: bool = False) -> list:
    """Paper bots for the `top` best parameter sets of a finished sweep on a stored market (same strategy, market and
    fill rules), named `sweep<id>-<rank>-<param><value>...`; existing ones are updated. `start`: start them (they
    trade from the next closed candle)."""
    from apps.common.errors import ApplicationError

    sweep = research_row_for_bots(Sweep, sweep_id, top=top)
    rows = [{"index": r.index, "parameters": r.parameters, "metrics": r.metrics, "error": r.error}
            for r in SweepResult.objects.filter(sweep=sweep)]
    ranked = [r for r in rank_results(rows, sweep.metric, top) if not r.get("error")][:top]
    if not ranked:
        raise ApplicationError(f"sweep #{sweep_id} has no successful result yet", field="sweep_id")
    return bots_from_parameter_sets(sweep, [r["parameters"] for r in ranked], label=f"sweep{sweep.pk}",
                                    origin=f"sweep:{sweep.pk}", start=start)
