"""Workers killed mid-work: SIGKILL of a pool process during a sweep chunk, SIGKILL of the whole worker during a
backtest run, SIGTERM (warm shutdown) during a backtest. Real prefork workers, real Redis broker, real PostgreSQL."""

from __future__ import annotations

import signal

import pytest

from apps.backtest import services
from apps.backtest.models import BacktestRun, Status, Sweep, SweepResult
from apps.market.services import ingest_candles
from tests.celery_workers import start_worker, stop_worker, workers_active
from tests.reliability import strategies
from tests.reliability.harness import kill, real_candles, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers]

MARKET = {"exchange": "h12kill", "symbol": "BTC/USDT", "timeframe": "1m"}
GRID = {"fast": [5, 8, 10, 12], "slow": [20, 30, 40]}  # 12 parameter sets
ENV = {"TRADEBOT_STRATEGIES": strategies.PATHS, "DJANGO_SETTINGS_MODULE": "tests.reliability.worker_settings"}


@pytest.fixture
def stored():
    df = real_candles(600)
    ingest_candles(**MARKET, df=df, publish=False)
    return df


@pytest.fixture(autouse=True)
def test_strategies():
    strategies.register_all()
    strategies.reset_keys()
    yield
    strategies.reset_keys()


def blocked_pid() -> int:
    r = strategies.redis_client()
    return int(wait_until(lambda: r.get(strategies.PID), what="a task blocked inside the strategy", limit_s=45))


def test_given_a_pool_process_sigkilled_mid_sweep_chunk_then_the_sweep_completes_with_every_set_once(stored, figures):
    with workers_active(concurrency=2, queues="backtest", extra_env=ENV):
        sweep = services.create_sweep(strategy="h12_block_once", grid=GRID, chunk_size=3, metric="sharpe", top_k=12,
                                      **MARKET)
        kill(blocked_pid(), signal.SIGKILL)
        sweep = wait_until(lambda: (s := Sweep.objects.get(pk=sweep.pk)).status != Status.RUNNING and s,
                           what="the sweep finishes", limit_s=50)
    indexes = list(SweepResult.objects.filter(sweep=sweep).values_list("index", flat=True))
    figures.fault = "SIGKILL of the pool process running a sweep chunk"
    figures.faults_injected = 1
    figures.decisions = len(indexes)
    figures.lost = sweep.total - len(set(indexes))
    figures.doubled = len(indexes) - len(set(indexes)) + max(0, sweep.completed - sweep.total)
    assert sweep.status == Status.DONE, sweep.error
    assert (sweep.total, sweep.completed, sweep.failed, sweep.error) == (12, 12, 0, "")
    assert sorted(r["index"] for r in sweep.ranking) == list(range(12))
    assert all(r.metrics and r.metrics["bars"] == len(stored) for r in SweepResult.objects.filter(sweep=sweep))
    figures.check("the killed chunk was redelivered (acks_late + reject_on_worker_lost) and the sweep ranked all 12 "
                  "sets, each stored once")
    figures.assert_nothing_lost_or_doubled()


def test_given_the_whole_worker_sigkilled_mid_backtest_then_another_worker_reruns_it_and_it_is_stored_once(
        stored, figures):
    from apps.backtest.engine.run import run_backtest
    from apps.bots.strategies.registry import create_strategy
    from apps.bots.trading.fills import FillRules

    proc, _ = start_worker(concurrency=1, queues="backtest", extra_env=ENV)
    from tradebot.celery import app

    was_eager, app.conf.task_always_eager = app.conf.task_always_eager, False
    try:
        run = services.create_run(strategy="h12_block_once", parameters={"fast": 8, "slow": 30}, **MARKET)
        blocked_pid()
        mid = BacktestRun.objects.get(pk=run.pk)
        import os

        os.killpg(proc.pid, signal.SIGKILL)  # main process and pool: nothing acks, nothing cleans up
        proc.wait(timeout=10)
        with workers_active(concurrency=1, queues="backtest", extra_env=ENV):
            done = wait_until(lambda: (r := BacktestRun.objects.get(pk=run.pk)).status == Status.DONE and r,
                              what="the run redelivered to the new worker finishes", limit_s=50)
    finally:
        app.conf.task_always_eager = was_eager
        stop_worker(proc)
    computes = int(strategies.redis_client().get(strategies.CALLS))
    ref = run_backtest(stored, create_strategy("sma_cross", {"fast": 8, "slow": 30}), FillRules(), "1m")
    figures.fault = "SIGKILL of a whole worker (main + pool) during a backtest run"
    figures.faults_injected = 1
    figures.decisions = 1
    figures.extra = {"computes": computes, "status_while_killed": mid.status}
    assert mid.status == Status.RUNNING and mid.metrics == {}  # nothing half-stored while it ran
    assert computes == 2  # the killed attempt and the redelivered one
    assert done.metrics["closed_trades"] == ref.metrics["closed_trades"]
    assert done.final_equity == pytest.approx(ref.metrics["final_equity"])
    assert done.error == ""
    figures.check("the unacked message came back after the broker visibility timeout; the rerun stored the same "
                  "result as an in-process backtest, once")


def test_given_sigterm_during_a_backtest_then_warm_shutdown_finishes_it_before_exiting(stored, figures):
    proc, _ = start_worker(concurrency=1, queues="backtest", extra_env=ENV)
    from tradebot.celery import app

    was_eager, app.conf.task_always_eager = app.conf.task_always_eager, False
    try:
        run = services.create_run(strategy="h12_block_once", parameters={"fast": 8, "slow": 30}, **MARKET)
        blocked_pid()
        proc.send_signal(signal.SIGTERM)
        still_running = proc.poll() is None
        strategies.redis_client().set(strategies.RELEASE, 1)
        code = proc.wait(timeout=45)
    finally:
        app.conf.task_always_eager = was_eager
        stop_worker(proc)
    done = BacktestRun.objects.get(pk=run.pk)
    computes = int(strategies.redis_client().get(strategies.CALLS))
    figures.fault = "SIGTERM to the worker while a backtest runs"
    figures.faults_injected = 1
    figures.decisions = 1
    figures.doubled = computes - 1
    assert still_running and code == 0
    assert done.status == Status.DONE and done.metrics["bars"] == len(stored)
    figures.check("the worker waited for the running backtest, stored it DONE, then exited 0")
    figures.assert_nothing_lost_or_doubled()


def test_given_a_backtest_over_its_soft_time_limit_then_failed_with_the_reason_and_the_worker_runs_the_next(
        stored, figures):
    env = {**ENV, "TRADEBOT_BACKTEST_SOFT_TIME_LIMIT": "2", "TRADEBOT_BACKTEST_TIME_LIMIT": "30"}
    with workers_active(concurrency=1, queues="backtest", extra_env=env):
        slow = services.create_run(strategy="h12_block_once", parameters={"fast": 8, "slow": 30}, **MARKET)
        slow = wait_until(lambda: (r := BacktestRun.objects.get(pk=slow.pk)).status == Status.FAILED and r,
                          what="the run over its soft limit is failed", limit_s=50)
        nxt = services.create_run(strategy="sma_cross", parameters={"fast": 8, "slow": 30}, **MARKET)
        nxt = wait_until(lambda: (r := BacktestRun.objects.get(pk=nxt.pk)).status == Status.DONE and r,
                         what="the next run on the same worker", limit_s=50)
    figures.fault = "a backtest run blocking past its soft time limit (2 s)"
    figures.faults_injected = 1
    figures.decisions = 2
    assert "soft time limit" in slow.error and slow.metrics == {}
    assert nxt.metrics["bars"] == len(stored)
    figures.check(f"the run is FAILED with '{slow.error[:70]}', nothing half-stored; the same worker ran the next "
                  "one to DONE")
