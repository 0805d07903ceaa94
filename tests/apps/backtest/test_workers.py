"""Sweeps on REAL Celery workers (a prefork subprocess on queue `backtest`) against the test database and Redis."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from apps.backtest import services
from apps.backtest.models import Status, Sweep, SweepResult
from apps.bots.strategies.registry import register
from apps.market.csvio import read_candle_csv
from apps.market.selectors import candle_frame
from apps.market.services import ingest_candles
from tests.celery_workers import FLAKY_KEY, real_celery_worker  # noqa: F401 - the fixture

EX, SYM, TF = "binance", "BTC/USDT", "1m"
GRID = {"fast": [5, 10, 20, 30], "slow": [40, 60, 90]}  # 12 sma_cross configs


@pytest.fixture
def stored_1m(data_dir: Path):
    """Real Binance BTC/USDT 1m candles (2023-03-17, one day), committed so the worker process can read them."""
    df = read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", timeframe=TF,
                         time_label="open")
    day = df[(df["timestamp"] > 1679011200000) & (df["timestamp"] <= 1679097600000)].reset_index(drop=True)
    ingest_candles(exchange=EX, symbol=SYM, timeframe=TF, df=day, publish=False)
    return day


def wait_for(sweep_id: int, limit_s: float = 180.0) -> Sweep:
    """Poll the row until the workers finish it (the limit only guards against a hung suite; nothing is timed)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        sweep = Sweep.objects.get(pk=sweep_id)
        if sweep.status in (Status.DONE, Status.FAILED):
            return sweep
        time.sleep(0.2)
    raise AssertionError(f"sweep {sweep_id} not finished: {Sweep.objects.get(pk=sweep_id).status}")


@pytest.mark.workers
@pytest.mark.django_db(transaction=True)
def test_given_a_real_worker_when_a_sweep_runs_then_its_ranking_equals_the_in_process_sweep(
        stored_1m, real_celery_worker):  # noqa: F811
    sweep = services.create_sweep(strategy="sma_cross", grid=GRID, chunk_size=4, top_k=12, exchange=EX,
                                  symbol=SYM, timeframe=TF)
    # stored pending, then a worker dispatches its chunks (never the process that created it)
    assert Sweep.objects.get(pk=sweep.pk).status in (Status.PENDING, Status.RUNNING)
    sweep = wait_for(sweep.pk)
    assert sweep.status == Status.DONE, sweep.error
    assert (sweep.total, sweep.completed, sweep.failed) == (12, 12, 0)
    ref = services.run_sweep_in_process("sma_cross", services.plan_param_sets("sma_cross", grid=GRID),
                                        candle_frame(exchange=EX, symbol=SYM, timeframe=TF), timeframe=TF,
                                        rules_kwargs={}, metric="sharpe")
    assert [(r["index"], r["parameters"], r["value"]) for r in sweep.ranking] == [
        (r["index"], r["parameters"], r["value"]) for r in ref]
    stored = {r.index: r.metrics for r in SweepResult.objects.filter(sweep=sweep)}
    assert all(stored[r["index"]] == r["metrics"] for r in ref)


@pytest.mark.workers
@pytest.mark.django_db(transaction=True)
def test_given_a_chunk_that_fails_once_and_a_bad_set_when_swept_on_workers_then_retry_completes_and_bad_fails_alone(
        stored_1m, real_celery_worker, redis_client):  # noqa: F811
    from tests.celery_workers import FlakyStrategy

    register(FlakyStrategy)  # the worker registers it from TRADEBOT_STRATEGIES
    grid = {"fast": [5, 10, 50], "slow": [40, 60]}  # fast=50 with slow=40: invalid, must fail alone
    sweep = services.create_sweep(strategy="h6_flaky_sma_cross", grid=grid, chunk_size=2, exchange=EX, symbol=SYM,
                                  timeframe=TF)
    sweep = wait_for(sweep.pk)
    assert sweep.status == Status.DONE, sweep.error
    assert (sweep.total, sweep.completed, sweep.failed) == (6, 6, 1)
    results = {r.index: r for r in SweepResult.objects.filter(sweep=sweep)}
    assert len(results) == 6
    bad = [r for r in results.values() if r.error]
    assert [(b.parameters["fast"], b.parameters["slow"]) for b in bad] == [(50, 40)]
    assert "'fast' must be < slow" in bad[0].error
    # 5 valid sets computed once each, plus the one call that raised OperationalError before its chunk was retried.
    assert int(redis_client.get(FLAKY_KEY)) == 5 + 1
    assert all(r.metrics["bars"] == len(stored_1m) for r in results.values() if not r.error)


@pytest.mark.workers
@pytest.mark.django_db(transaction=True)
def test_given_a_real_worker_when_a_walkforward_is_queued_then_the_worker_stores_the_in_process_result(
        stored_1m, real_celery_worker):  # noqa: F811
    from apps.backtest.models import WalkForward

    grid = {"fast": [5, 10], "slow": [40, 60]}
    study = services.create_walkforward(strategy="sma_cross", grid=grid, train="6h", test="2h", exchange=EX,
                                        symbol=SYM, timeframe=TF)
    assert WalkForward.objects.get(pk=study.pk).status in (Status.PENDING, Status.RUNNING)  # stored, not computed
    deadline = time.monotonic() + 180
    while WalkForward.objects.get(pk=study.pk).status not in (Status.DONE, Status.FAILED):
        assert time.monotonic() < deadline, "walk-forward not finished"
        time.sleep(0.2)
    study = WalkForward.objects.get(pk=study.pk)
    assert study.status == Status.DONE, study.error
    ref = services.run_walkforward_in_process("sma_cross", grid, candle_frame(exchange=EX, symbol=SYM, timeframe=TF),
                                              timeframe=TF, rules_kwargs={}, train="6h", test="2h")
    assert len(study.windows) == len(ref["windows"]) == (len(stored_1m) - 480) // 120 + 1
    assert study.windows == ref["windows"] and study.stitched_metrics == ref["stitched_metrics"]
