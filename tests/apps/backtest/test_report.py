"""The report: candlesticks + volume, indicators, buy & hold beside equity, P&L-coloured segments, formatting,
downsampling that keeps highs/lows/volume, every trade and the drawdown trough."""

from __future__ import annotations

import numpy as np

from apps.backtest import report
from apps.backtest.services import run_in_memory
from tests.factories import sample_candles


def test_given_many_candles_when_bucketed_for_the_browser_then_extremes_and_volume_survive():
    df = sample_candles(timeframe="1h")
    bars = report.bucket_ohlcv(df, max_points=500)
    assert len(bars) <= 500
    assert bars["high"].max() == df["high"].max() and bars["low"].min() == df["low"].min()
    assert np.isclose(bars["volume"].sum(), df["volume"].sum())
    assert bars["timestamp"].iloc[-1] == df["timestamp"].iloc[-1] and bars["open"].iloc[0] == df["open"].iloc[0]


def test_given_a_deep_trough_between_samples_when_thinning_then_it_is_kept():
    idx = report._thin(100_000, 1000, keep=[12_345])
    assert 12_345 in idx and idx[0] == 0 and idx[-1] == 99_999


def test_given_a_backtest_when_rendering_then_candles_indicators_buy_hold_segments_and_all_trades_are_drawn():
    df = sample_candles(timeframe="1h")
    result = run_in_memory(df, strategy="sma_cross", parameters={"fast": 5, "slow": 20}, timeframe="1h",
                           rules_kwargs={})
    payload = {**result.to_dict(), "equity_curve": result.equity_curve(max_points=report.MAX_POINTS)}
    indicators = report.strategy_indicators("sma_cross", {"fast": 5, "slow": 20}, df)
    fig = report.build_figure(df, payload, indicators)
    names = [t.name for t in fig.data]
    assert fig.data[0].type == "candlestick" and fig.data[1].type == "bar"
    assert "buy & hold" in names and "equity" in names and "winning trades" in names and "losing trades" in names
    assert any(n not in ("price", "volume") and n in indicators for n in names)  # an SMA on the price panel
    entry = next(t for t in fig.data if t.name == "entry")
    assert len(entry.x) == len(payload["trades"])


def test_given_money_and_percentages_when_formatted_then_two_decimals_with_signs():
    assert report.money(-320.138, sign=True) == "-320.14" and report.money(1204.5, sign=True) == "+1,204.50"
    assert report.pct(-3.20458) == "-3.20 %" and report.money(None) == "-"


def test_given_a_report_file_and_a_fragment_when_rendered_then_only_the_file_embeds_plotly():
    df = sample_candles(timeframe="1h", nrows=300)
    result = run_in_memory(df, strategy="sma_cross", parameters={"fast": 5, "slow": 20}, timeframe="1h",
                           rules_kwargs={})
    full = report.render_report(title="t", df=df, result=result)
    part = report.render_report(title="t", df=df, result=result, fragment=True)
    assert "<html" in full and "<html" not in part and len(full) > 1_000_000 > len(part)
