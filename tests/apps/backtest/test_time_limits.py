"""The `backtest` queue's soft time limit on a REAL worker: a run and a sweep that reach it are marked failed with the
reason. The limit (1 s) is set through the environment of that worker only (TRADEBOT_BACKTEST_SOFT_TIME_LIMIT)."""

from __future__ import annotations

import time

import pytest

from apps.backtest import services
from apps.backtest.models import BacktestRun, Status, Sweep
from apps.bots.strategies.registry import register
from apps.market.csvio import read_candle_csv
from apps.market.services import ingest_candles
from tests.celery_workers import workers_active

EX, SYM, TF = "binance", "BTC/USDT", "1h"
REASON = "exceeded the soft time limit of 1 s"
WORKER_ENV = {
    "TRADEBOT_BACKTEST_SOFT_TIME_LIMIT": "1",
    "TRADEBOT_BACKTEST_TIME_LIMIT": "10",
    "TRADEBOT_STRATEGIES": "tests.apps.backtest.blocking_strategy.BlockingStrategy,"
                           "tests.apps.backtest.blocking_strategy.StubbornStrategy",
}


@pytest.fixture
def stored_1h(data_dir):
    df = read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", timeframe="1m",
                         time_label="open")
    hourly = df[df["timestamp"] % 3_600_000 == 0].reset_index(drop=True).head(300)
    ingest_candles(exchange=EX, symbol=SYM, timeframe=TF, df=hourly, publish=False)
    return hourly


def wait_until(load, done, limit_s: float = 180.0):
    """Poll until `done(row)`; the limit only guards against a hung suite (nothing is timed)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        row = load()
        if done(row):
            return row
        time.sleep(0.2)
    row = load()
    raise AssertionError(f"not reached: status={row.status} error={row.error!r}")


@pytest.mark.workers
@pytest.mark.django_db(transaction=True)
def test_given_a_worker_with_a_1s_soft_limit_when_a_run_and_a_sweep_block_then_both_fail_with_the_reason(
        stored_1h, redis_client):
    from tests.apps.backtest.blocking_strategy import BlockingStrategy

    register(BlockingStrategy)  # this process validates the strategy; the worker loads it from TRADEBOT_STRATEGIES
    with workers_active(concurrency=2, extra_env=WORKER_ENV):
        run = services.create_run(strategy="h7b_blocking_rsi", parameters={}, exchange=EX, symbol=SYM,
                                  timeframe=TF)
        sweep = services.create_sweep(strategy="h7b_blocking_rsi", grid={"period": [10, 14, 20]}, chunk_size=2,
                                      exchange=EX, symbol=SYM, timeframe=TF)

        run = wait_until(lambda: BacktestRun.objects.get(pk=run.pk),
                         lambda r: r.status == Status.FAILED and "time limit" in r.error)
        sweep = wait_until(lambda: Sweep.objects.get(pk=sweep.pk), lambda s: s.status != Status.RUNNING)

    assert run.status == Status.FAILED and run.error == REASON
    assert sweep.status == Status.FAILED
    assert sweep.error.startswith("chunk ") and sweep.error.endswith(REASON)
    assert sweep.completed == 0 and sweep.ranking in (None, [], {})


@pytest.mark.workers
@pytest.mark.django_db(transaction=True)
def test_given_a_run_that_ignores_the_soft_limit_when_the_worker_kills_it_at_the_hard_limit_then_it_is_failed(
        stored_1h, redis_client):
    from tests.apps.backtest.blocking_strategy import StubbornStrategy

    register(StubbornStrategy)
    with workers_active(concurrency=1, extra_env=WORKER_ENV):
        run = services.create_run(strategy="h7b_stubborn_rsi", parameters={}, exchange=EX, symbol=SYM, timeframe=TF)
        run = wait_until(lambda: BacktestRun.objects.get(pk=run.pk), lambda r: r.status == Status.FAILED)

    assert run.error == "exceeded the hard time limit of 10 s (the worker killed the task)"


def test_given_the_default_limits_when_a_worker_applies_them_then_each_queue_gets_its_own_soft_and_hard_limit(
        settings):
    from tradebot.celery import app, apply_queue_time_limits

    settings.TRADEBOT_MARKET_SOFT_TIME_LIMIT, settings.TRADEBOT_MARKET_TIME_LIMIT = 11.0, 12.0
    settings.TRADEBOT_COLLECT_SOFT_TIME_LIMIT, settings.TRADEBOT_COLLECT_TIME_LIMIT = 41.0, 42.0
    settings.TRADEBOT_BOTS_SOFT_TIME_LIMIT, settings.TRADEBOT_BOTS_TIME_LIMIT = 21.0, 22.0
    settings.TRADEBOT_BACKTEST_SOFT_TIME_LIMIT, settings.TRADEBOT_BACKTEST_TIME_LIMIT = 31.0, 32.0
    saved = {name: (t.soft_time_limit, t.time_limit) for name, t in app.tasks.items()}
    try:
        applied = apply_queue_time_limits(app)
        assert applied["apps.backtest.tasks.run_backtest_task"] == (31.0, 32.0)
        assert applied["apps.backtest.tasks.sweep_chunk_task"] == (31.0, 32.0)
        collect = {"apps.market.tasks.collect_market_task", "apps.market.tasks.collect_watched_task",
                   "apps.market.tasks.backfill_task"}  # exchange I/O: the `collect` queue
        assert {v for k, v in applied.items() if k in collect} == {(41.0, 42.0)}
        assert {v for k, v in applied.items() if k.startswith("apps.market.tasks.") and k not in collect} == {
            (11.0, 12.0)}
        assert {v for k, v in applied.items() if k.startswith("apps.bots.tasks.")} == {(21.0, 22.0)}
        assert not any(k.startswith("celery.") for k in applied)
    finally:
        for name, (soft, hard) in saved.items():
            app.tasks[name].soft_time_limit, app.tasks[name].time_limit = soft, hard
            app.tasks[name]._exec_options = None
