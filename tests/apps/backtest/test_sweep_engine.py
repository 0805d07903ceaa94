"""Sweep engine (pure): expansion, seeded sampling, validation, chunk runs with a shared indicator cache, ranking."""

from __future__ import annotations

import numpy as np
import pytest

from apps.backtest.engine.chunk import run_chunk
from apps.backtest.engine.ranking import rank_results
from apps.backtest.engine.run import run_backtest
from apps.backtest.engine.space import SweepSpaceError, expand_grid, random_samples, split_chunks, validate_param_sets
from apps.bots.strategies.registry import get_strategy_class
from apps.bots.trading.candles import CandleArrays
from apps.bots.trading.fills import FillRules
from apps.market.csvio import read_candle_csv

SMA = get_strategy_class("sma_cross")


@pytest.fixture(scope="module")
def btc_5m():
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "sample_data" / "binance_spot_2023" / "binance_BTC_USDT-5m.csv.gz"
    return read_candle_csv(path, timeframe="5m", time_label="open")


def test_given_a_grid_when_expanded_then_every_combination_in_stable_order():
    sets = expand_grid({"fast": [5, 10], "slow": [50, 100, 150]})
    assert len(sets) == 6
    assert sets[0] == {"fast": 5, "slow": 50} and sets[1] == {"fast": 5, "slow": 100}
    assert sets[-1] == {"fast": 10, "slow": 150}


def test_given_an_empty_grid_value_when_expanded_then_the_parameter_is_named():
    with pytest.raises(SweepSpaceError, match="'slow' has no values"):
        expand_grid({"fast": [5], "slow": []})


def test_given_a_seed_when_sampling_randomly_then_samples_repeat_and_stay_in_the_space():
    space = {"fast": [2, 30], "slow": {"min": 40, "max": 200}}
    a = random_samples(SMA, 50, seed=7, space=space)
    b = random_samples(SMA, 50, seed=7, space=space)
    c = random_samples(SMA, 50, seed=8, space=space)
    assert a == b and a != c
    assert all(2 <= s["fast"] <= 30 and 40 <= s["slow"] <= 200 for s in a)
    assert all(isinstance(s["fast"], int) for s in a)


def test_given_an_unknown_parameter_in_the_space_when_sampling_then_it_is_named():
    with pytest.raises(SweepSpaceError, match="unknown parameter 'fastest'"):
        random_samples(SMA, 3, seed=1, space={"fastest": [1, 2]})


def test_given_a_bad_set_among_good_ones_when_validated_then_only_it_fails_with_its_reason():
    checked = validate_param_sets(SMA, [{"fast": 5, "slow": 50}, {"fast": 60, "slow": 50}, {"fast": 10}])
    assert [bool(c["error"]) for c in checked] == [False, True, False]
    assert "fast" in checked[1]["error"] and "slow" in checked[1]["error"]
    assert checked[2]["parameters"] == {"fast": 10, "slow": 50}  # defaults filled in


def test_given_items_when_split_then_chunks_keep_order_and_sizes():
    chunks = split_chunks(list(range(12)), 5)
    assert [len(c) for c in chunks] == [5, 5, 2]
    assert sum(chunks, []) == list(range(12))


def test_given_real_candles_when_a_chunk_runs_then_each_result_equals_a_standalone_backtest(btc_5m):
    rules = FillRules(fee=0.001)
    sets = [{"fast": 5, "slow": 50}, {"fast": 10, "slow": 50}, {"fast": 5, "slow": 100}, {"fast": 80, "slow": 50}]
    cache: dict = {}
    results = run_chunk(CandleArrays.from_frame(btc_5m), SMA, list(enumerate(sets)), rules, "5m", cache=cache)
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    # Distinct SMAs computed once: 5, 10, 50, 100 (the invalid set computes nothing).
    assert len(cache) == 4
    for r, params in zip(results[:3], sets[:3], strict=True):
        ref = run_backtest(btc_5m, SMA(params), rules, "5m")
        assert r["error"] == ""
        assert r["metrics"]["final_equity"] == pytest.approx(ref.final_equity, rel=0, abs=0)
        assert r["metrics"]["closed_trades"] == ref.metrics["closed_trades"]
        assert r["metrics"]["sharpe"] == ref.metrics["sharpe"]
    assert results[3]["metrics"] is None and "fast" in results[3]["error"]


def test_given_results_when_ranked_then_best_first_none_and_failures_last_ties_by_index():
    results = [
        {"index": 0, "metrics": {"sharpe": 1.0, "fees_paid": 5.0}, "error": ""},
        {"index": 1, "metrics": {"sharpe": None, "fees_paid": 1.0}, "error": ""},
        {"index": 2, "metrics": {"sharpe": 2.5, "fees_paid": 9.0}, "error": ""},
        {"index": 3, "metrics": None, "error": "ParameterError: bad"},
        {"index": 4, "metrics": {"sharpe": 1.0, "fees_paid": 2.0}, "error": ""},
        {"index": 5, "metrics": {"sharpe": float("nan"), "fees_paid": 2.0}, "error": ""},
    ]
    assert [r["index"] for r in rank_results(results, "sharpe")] == [2, 0, 4, 1, 3, 5]
    assert [r["index"] for r in rank_results(results, "sharpe", top_k=2)] == [2, 0]
    # fees_paid: lower is better; a leading '-' flips any metric.
    assert [r["index"] for r in rank_results(results, "fees_paid")][:3] == [1, 4, 5]
    assert [r["index"] for r in rank_results(results, "-sharpe")][:3] == [0, 4, 2]
    top = rank_results(results, "sharpe")[0]
    assert top["rank"] == 1 and top["value"] == 2.5


def test_given_real_candles_when_cache_is_shared_then_results_equal_uncached(btc_5m):
    arrays = CandleArrays.from_frame(btc_5m.iloc[:4000])
    sets = [{"fast": f, "slow": s} for f in (5, 20) for s in (60, 120)]
    shared = run_chunk(arrays, SMA, sets, FillRules(), "5m", cache={})
    alone = [run_chunk(arrays, SMA, [p], FillRules(), "5m")[0] for p in sets]
    assert [r["metrics"] for r in shared] == [r["metrics"] for r in alone]
    assert np.all([r["compute_seconds"] >= 0 for r in shared])
