"""Benchmark: 100 sma_cross configs x 1,000,000 1m candles through REAL Celery workers (1, then 2 processes).

Prints ONE JSON line. Data: bench/backtest.py's seeded random walk (BTC 1m volatility), generated BEFORE timing and
written as a structured .npy in a temp dir; tasks read it memory-mapped by path (one copy in the page cache for all
worker processes, ~48 MB; a DB fetch of 1M rows per task would cost seconds and measure the database, not the sweep).
The sweep is the product path: services.create_sweep -> chord(group(sweep_chunk_task), finish_sweep_task) on queue
`backtest`, SweepResults stored in PostgreSQL, ranking by sharpe.

Reported (medians of 3 after an untimed warm-up sweep per worker count, which also loads numba's disk cache):
* compute_s: sum of the per-set compute times measured INSIDE the tasks (strategy.compute with the chunk's shared
  indicator cache + simulate + compute_metrics), and wall_s end to end (create_sweep -> status done);
* scaling_efficiency = wall(1 worker) / (2 * wall(2 workers));
* worker_peak_rss_mb: max VmHWM over the worker's processes (main + prefork children);
* baseline_floor_s: 100 sequential runs of bench/backtest.py's numba reference loop over precomputed SMAs (the floor;
  SMAs not timed), and inprocess_s: our run_chunk of all 100 configs in this process (no Celery, no DB) with a fresh
  indicator cache (every SMA computed), inprocess_warm_s: the same with this process's IndicatorLRU already holding
  the SMAs (what a worker's later chunks of the same data see).
Indicator cache: each worker process keeps an IndicatorLRU (engine/cache.py) keyed by the data's content
fingerprint, so chunks of the same data on one process reuse SMAs. The warm-up sweep runs on OTHER data (another
seed), so the first timed sweep computes every SMA (compute_s_*_cold) and the next two reuse them; compute_s_* is
the median of the three. Workers tune the allocator in worker_process_init (tradebot.memory).
Run: DJANGO_SETTINGS_MODULE=tradebot.settings.test DATABASE_URL=... REDIS_URL=... python bench/sweep.py
(the database is migrated first; `backtest` queue workers are started and stopped by this script).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradebot.settings.test")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from apps.backtest import services  # noqa: E402
from apps.backtest.engine.cache import process_indicator_cache  # noqa: E402
from apps.backtest.engine.chunk import run_chunk  # noqa: E402
from apps.backtest.engine.space import expand_grid  # noqa: E402
from apps.backtest.models import Status, Sweep, SweepResult  # noqa: E402
from apps.bots.strategies import indicators as ind  # noqa: E402
from apps.bots.strategies.sma_cross import CROSS_TOLERANCE, SmaCross  # noqa: E402
from apps.bots.trading.candles import CandleArrays  # noqa: E402
from apps.bots.trading.fills import FillRules  # noqa: E402
from tests.celery_workers import start_worker, stop_worker  # noqa: E402
from tradebot.celery import app  # noqa: E402
from tradebot.memory import tune_allocator  # noqa: E402

N = 1_000_000
GRID = {"fast": list(range(5, 51, 5)), "slow": list(range(60, 241, 20))}
REPEAT = 3


def _bench_backtest():
    spec = importlib.util.spec_from_file_location("bench_backtest", ROOT / "bench" / "backtest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _worker_peak_rss_mb(pid: int) -> float:
    """Max VmHWM (peak resident set) over the worker's main process and its children, from /proc."""
    pids = [pid]
    try:
        import psutil

        pids += [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except Exception:  # noqa: BLE001 - psutil missing or process gone: the main pid alone
        pass
    peak = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak / 1024.0


def _save_npy(arrays: CandleArrays, path: str) -> None:
    rec = np.empty(len(arrays), dtype=[("timestamp", "i8"), ("open", "f8"), ("high", "f8"), ("low", "f8"),
                                       ("close", "f8"), ("volume", "f8")])
    for c in rec.dtype.names:
        rec[c] = getattr(arrays, c)
    np.save(path, rec)


def _one_sweep(path: str, chunk_size: int) -> tuple[float, float, Sweep]:
    t0 = time.perf_counter()
    sweep = services.create_sweep(strategy="sma_cross", grid=GRID, chunk_size=chunk_size, top_k=10, exchange="bench",
                                  symbol="RANDOM/WALK", timeframe="1m", data_file=path, time_label="close",
                                  initial_balance=1e200)
    while True:
        row = Sweep.objects.get(pk=sweep.pk)
        if row.status in (Status.DONE, Status.FAILED):
            break
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    if row.status != Status.DONE or row.failed:
        raise SystemExit(f"bench sweep #{row.pk} {row.status}: {row.error} ({row.failed} failed)")
    compute = sum(SweepResult.objects.filter(sweep_id=row.pk).values_list("compute_seconds", flat=True))
    return wall, compute, row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunk-size", type=int, default=25)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    allocator_tuned = tune_allocator()  # as in the workers; the floor and the in-process runs share it
    bb = _bench_backtest()
    df = bb.make_candles(N)
    arrays = CandleArrays.from_frame(df)
    sets = expand_grid(GRID)
    assert len(sets) == 100
    tmp = tempfile.mkdtemp(prefix="bench-sweep-")
    path = os.path.join(tmp, "candles.npy")
    warm_path = os.path.join(tmp, "warmup.npy")  # other data: loads numba's cache without warming the SMAs
    _save_npy(arrays, path)
    _save_npy(CandleArrays.from_frame(bb.make_candles(N, seed=8)), warm_path)

    # Baseline (the floor): 100 runs of the plain numba loop over precomputed SMAs.
    smas = {n: ind.sma(arrays.close, n) for n in {*GRID["fast"], *GRID["slow"]}}

    def floor_all():
        return [bb.floor_loop(arrays.close, smas[p["fast"]], smas[p["slow"]], 0.001, 1e200, CROSS_TOLERANCE)[0]
                for p in sets]

    floor_all()
    floor_times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        floor_finals = floor_all()
        floor_times.append(time.perf_counter() - t0)

    rules = FillRules(initial_balance=1e200)

    def inproc(cache):
        return run_chunk(arrays, SmaCross, list(enumerate(sets)), rules, "1m", cache=cache)

    inproc({})
    in_times, warm_times = [], []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        ours = inproc({})
        in_times.append(time.perf_counter() - t0)
    inproc(None)  # fills this process's IndicatorLRU
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        inproc(None)
        warm_times.append(time.perf_counter() - t0)
    process_indicator_cache().clear()
    ratios_equal = all(abs(r["metrics"]["final_equity"] / f - 1.0) < 1e-9 for r, f in zip(ours, floor_finals,
                                                                                          strict=True))
    smas.clear()

    db_name = connection.settings_dict["NAME"]
    runs: dict[int, dict] = {}
    was_eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        for workers in (1, 2):
            app.control.purge()
            # Celery processes are the parallelism: one numba thread per worker process.
            proc, _ = start_worker(concurrency=workers, database_name=db_name, extra_env={"NUMBA_NUM_THREADS": "1"})
            try:
                _one_sweep(warm_path, args.chunk_size)  # warm-up: imports, numba cache load in every child
                walls, computes = [], []
                for _ in range(REPEAT):
                    wall, compute, row = _one_sweep(path, args.chunk_size)
                    walls.append(wall)
                    computes.append(compute)
                runs[workers] = {"wall_s": statistics.median(walls), "compute_s": statistics.median(computes),
                                 "compute_cold_s": computes[0], "wall_cold_s": walls[0],
                                 "peak_rss_mb": _worker_peak_rss_mb(proc.pid),
                                 "best": row.ranking[0]["parameters"]}
            finally:
                stop_worker(proc)
    finally:
        app.conf.task_always_eager = was_eager
        Sweep.objects.filter(exchange="bench").delete()
        os.unlink(path)
        os.unlink(warm_path)
        os.rmdir(tmp)

    floor = statistics.median(floor_times)
    out = {
        "bench": "sweep",
        "configs": len(sets),
        "candles": N,
        "chunk_size": args.chunk_size,
        "data": "structured .npy in a temp dir, memory-mapped by each task",
        "compute_s_1w": round(runs[1]["compute_s"], 4),
        "compute_s_2w": round(runs[2]["compute_s"], 4),
        "compute_s_1w_cold": round(runs[1]["compute_cold_s"], 4),
        "compute_s_2w_cold": round(runs[2]["compute_cold_s"], 4),
        "wall_s_1w": round(runs[1]["wall_s"], 4),
        "wall_s_2w": round(runs[2]["wall_s"], 4),
        "scaling_efficiency": round(runs[1]["wall_s"] / (2 * runs[2]["wall_s"]), 3),
        "worker_peak_rss_mb_1w": round(runs[1]["peak_rss_mb"], 1),
        "worker_peak_rss_mb_2w": round(runs[2]["peak_rss_mb"], 1),
        "baseline_floor_s": round(floor, 4),
        "inprocess_s": round(statistics.median(in_times), 4),
        "inprocess_warm_s": round(statistics.median(warm_times), 4),
        "compute_vs_floor": round(runs[1]["compute_s"] / floor, 2),
        "compute_cold_vs_floor": round(runs[1]["compute_cold_s"] / floor, 2),
        "wall_2w_vs_floor": round(runs[2]["wall_s"] / floor, 2),
        "inprocess_vs_floor": round(statistics.median(in_times) / floor, 2),
        "final_equity_matches_floor": ratios_equal,
        "same_best_1w_2w": runs[1]["best"] == runs[2]["best"],
        "allocator_tuned": allocator_tuned,
        "targets": {"compute_s": 0.4, "scaling_efficiency": 0.8, "peak_rss_mb": 1024},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
