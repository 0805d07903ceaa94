"""Backtest services on PostgreSQL with real Binance 1m candles: runs, eager sweeps (chord), walk-forward, report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from apps.backtest import selectors, services
from apps.backtest.engine.run import run_backtest
from apps.backtest.models import BacktestRun, Status, Sweep, SweepResult
from apps.backtest.report import report_for_run
from apps.bots.strategies.registry import get_strategy_class
from apps.bots.trading.fills import FillRules
from apps.market.csvio import read_candle_csv
from apps.market.selectors import candle_frame
from apps.market.services import ingest_candles

EX, SYM, TF = "binance", "BTC/USDT", "1m"
# 2023-03-24 (close times): holds Binance's spot outage, a hole of 80 missing 1m candles.
DAY_START, DAY_END = 1679616060000, 1679702400000


@pytest.fixture
def outage_day(data_dir: Path):
    df = read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", timeframe=TF,
                         time_label="open")
    day = df[(df["timestamp"] >= DAY_START) & (df["timestamp"] <= DAY_END)].reset_index(drop=True)
    ingest_candles(exchange=EX, symbol=SYM, timeframe=TF, df=day, publish=False)
    return day


@pytest.mark.django_db
def test_given_stored_candles_when_a_run_is_created_then_it_runs_on_commit_and_equals_the_engine(
        outage_day, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = services.create_run(strategy="sma_cross", parameters={"fast": 10, "slow": 50}, exchange=EX,
                                  symbol=SYM, timeframe=TF)
    run.refresh_from_db()
    assert run.status == Status.DONE and run.progress == 1.0 and run.error == ""
    ref = run_backtest(candle_frame(exchange=EX, symbol=SYM, timeframe=TF), get_strategy_class("sma_cross")(
        {"fast": 10, "slow": 50}), FillRules(), TF)
    assert run.final_equity == ref.final_equity
    assert run.metrics["closed_trades"] == ref.metrics["closed_trades"] == len(run.trades)
    assert run.parameters == {"fast": 10, "slow": 50}
    assert any("ledger gap" in w and "80 1m candles missing" in w for w in run.warnings)
    assert len(run.equity_curve["timestamp"]) == len(run.equity_curve["equity"]) > 0
    assert run.duration is not None and run.duration >= 0


@pytest.mark.django_db
def test_given_bad_parameters_when_creating_a_run_then_nothing_is_stored_and_the_parameter_is_named(outage_day):
    with pytest.raises(services.BacktestInputError, match="fast"):
        services.create_run(strategy="sma_cross", parameters={"fast": 80, "slow": 50}, exchange=EX, symbol=SYM,
                            timeframe=TF)
    with pytest.raises(services.BacktestInputError, match="unknown strategy 'nope'"):
        services.create_run(strategy="nope", exchange=EX, symbol=SYM, timeframe=TF)
    assert BacktestRun.objects.count() == 0


@pytest.mark.django_db
def test_given_a_grid_with_one_bad_set_when_the_sweep_runs_eagerly_then_it_fails_alone_and_ranking_matches(
        outage_day, django_capture_on_commit_callbacks):
    grid = {"fast": [5, 10, 60], "slow": [30, 50]}  # fast=60 is invalid with both slows; fast=5/10 are fine
    with django_capture_on_commit_callbacks(execute=True):
        sweep = services.create_sweep(strategy="sma_cross", grid=grid, chunk_size=2, top_k=3, exchange=EX,
                                      symbol=SYM, timeframe=TF)
    sweep.refresh_from_db()
    assert sweep.status == Status.DONE
    assert (sweep.total, sweep.completed, sweep.failed) == (6, 6, 2)
    failed = list(SweepResult.objects.filter(sweep=sweep).exclude(error="").order_by("index"))
    assert [f.parameters["fast"] for f in failed] == [60, 60]
    assert all("fast" in f.error and f.metrics is None for f in failed)
    ref = services.run_sweep_in_process("sma_cross", services.plan_param_sets("sma_cross", grid=grid),
                                        candle_frame(exchange=EX, symbol=SYM, timeframe=TF), timeframe=TF,
                                        rules_kwargs={}, metric="sharpe", top_k=3)
    assert [(r["index"], r["value"]) for r in sweep.ranking] == [(r["index"], r["value"]) for r in ref]
    assert selectors.sweep_progress(sweep)["progress"] == 1.0
    assert selectors.sweep_compute_seconds(sweep.pk) > 0


@pytest.mark.django_db
def test_given_a_chunk_delivered_twice_when_executed_then_results_and_progress_are_not_double_counted(outage_day):
    sweep = services.create_sweep(strategy="sma_cross", grid={"fast": [5, 10], "slow": [50]}, enqueue=False,
                                  exchange=EX, symbol=SYM, timeframe=TF)
    chunk = [[0, {"fast": 5, "slow": 50}], [1, {"fast": 10, "slow": 50}]]
    first = services.execute_sweep_chunk(sweep.pk, 0, chunk)
    again = services.execute_sweep_chunk(sweep.pk, 0, chunk)
    sweep.refresh_from_db()
    assert (first["stored"], again["stored"]) == (2, 0)
    assert sweep.completed == 2 and SweepResult.objects.filter(sweep=sweep).count() == 2
    finished = services.finish_sweep(sweep.pk)
    assert finished.status == Status.DONE and [r["rank"] for r in finished.ranking] == [1, 2]


@pytest.mark.django_db
def test_given_unknown_grid_parameter_when_planning_a_sweep_then_the_whole_sweep_is_refused(outage_day):
    with pytest.raises(services.BacktestInputError, match="unknown parameter 'fastest'"):
        services.create_sweep(strategy="sma_cross", grid={"fastest": [5]}, exchange=EX, symbol=SYM, timeframe=TF)
    assert Sweep.objects.count() == 0


@pytest.mark.django_db
def test_given_stored_candles_when_walking_forward_then_the_study_is_stored_with_windows(outage_day):
    study = services.create_and_run_walkforward(strategy="sma_cross", grid={"fast": [5, 10], "slow": [30, 50]},
                                                train=600, test="2h", exchange=EX, symbol=SYM, timeframe=TF)
    assert study.status == Status.DONE
    assert study.test_size == 120 and len(study.windows) == (len(outage_day) - 600) // 120
    assert all(w["out_of_sample"]["bars"] == 120 for w in study.windows)
    assert study.stitched_metrics["bars"] == 120 * len(study.windows)


@pytest.mark.django_db
def test_given_a_done_run_when_reported_then_the_html_is_offline_with_trades_and_metrics(
        outage_day, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = services.create_run(strategy="sma_cross", parameters={"fast": 10, "slow": 50}, exchange=EX,
                                  symbol=SYM, timeframe=TF)
    run.refresh_from_db()
    html = report_for_run(run)
    assert re.search(r"<script[^>]*\bsrc=", html) is None  # plotly.js embedded, nothing fetched
    assert "Plotly.newPlot" in html
    assert f"Closed trades ({len(run.trades)}" in html
    assert "sharpe" in html and "80 1m candles missing" in html
