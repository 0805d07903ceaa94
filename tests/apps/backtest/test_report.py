"""HTML reports of runs, sweeps and walk-forward studies on real Binance candles (sample_data): what the browser gets.

The figures are read back from the HTML itself (the JSON passed to Plotly.newPlot), so the tests check what is drawn.
"""

from __future__ import annotations

import base64
import json
import re
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from apps.backtest import services
from apps.backtest.formatting import format_count, format_money, format_pct, format_time
from apps.backtest.models import Status, WalkForward
from apps.backtest.report import (
    MAX_CANDLES,
    render_report,
    render_run_fragment,
    render_walkforward_report,
    report_for_run,
    sweep_report,
    walkforward_report,
)
from apps.bots.strategies.registry import get_strategy_class
from apps.market.csvio import read_candle_csv
from apps.market.selectors import candle_frame
from apps.market.services import ingest_candles

EX, SYM, TF = "binance", "BTC/USDT", "1m"
DAY_START, DAY_END = 1679616060000, 1679702400000  # 2023-03-24 (close times), with an 80-candle outage
MONEY = re.compile(r"^-?\d{1,3}(,\d{3})*\.\d{2}$")
PCT = re.compile(r"^-?\d{1,3}(,\d{3})*\.\d{2}%$")


def figures(html: str) -> list[list[dict]]:
    """The trace lists of every Plotly.newPlot call in `html`, typed arrays (bdata) decoded to lists."""
    out = []
    decoder = json.JSONDecoder()
    for m in re.finditer(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*", html):
        traces, _ = decoder.raw_decode(html, m.end())
        out.append([_decode(t) for t in traces])
    return out


def _decode(obj):
    if isinstance(obj, dict):
        if set(obj) >= {"dtype", "bdata"}:
            arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=np.dtype(obj["dtype"]))
            if "shape" in obj:
                arr = arr.reshape([int(s) for s in str(obj["shape"]).split(",")])
            return arr.tolist()
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def by_name(traces: list[dict], name: str) -> dict:
    found = [t for t in traces if t.get("name") == name or t.get("meta") == name]
    assert found, f"no trace {name!r} in {[t.get('name') for t in traces]}"
    return found[0]


def segments(trace: dict) -> int:
    """Entry->exit segments in a trace of [entry, exit, None, ...] points."""
    xs = trace["x"]
    assert len(xs) % 3 == 0 and all(x is None for x in xs[2::3])
    return len(xs) // 3


def cells(html: str, column: int) -> list[str]:
    """Text of `column` in each row of the closed-trades table."""
    table = html.split("Closed trades", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>\d+</td>(.*?)</tr>", table, flags=re.S)
    return [re.sub(r"<[^>]+>", "", c) for c in (re.findall(r"<td[^>]*>(.*?)</td>", r)[column - 1] for r in rows)]


@pytest.fixture
def outage_day(data_dir: Path):
    df = read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", timeframe=TF,
                         time_label="open")
    day = df[(df["timestamp"] >= DAY_START) & (df["timestamp"] <= DAY_END)].reset_index(drop=True)
    ingest_candles(exchange=EX, symbol=SYM, timeframe=TF, df=day, publish=False)
    return day


@pytest.mark.django_db
def test_given_a_done_run_with_stops_when_reported_then_candles_indicators_trades_and_buy_hold_are_drawn(
        outage_day, django_capture_on_commit_callbacks):
    params = {"fast": 10, "slow": 50}
    with django_capture_on_commit_callbacks(execute=True):
        run = services.create_run(strategy="sma_cross", parameters=params, exchange=EX, symbol=SYM, timeframe=TF,
                                  stop_loss=0.004, take_profit=0.004, initial_balance=12_345.0)
    run.refresh_from_db()
    assert run.status == Status.DONE
    html = report_for_run(run)
    assert re.search(r"<script[^>]*\bsrc=", html) is None  # plotly.js embedded, nothing fetched
    [traces] = figures(html)
    df = candle_frame(exchange=EX, symbol=SYM, timeframe=TF)

    candles = [t for t in traces if t["type"] == "candlestick"]
    assert len(candles) == 1 and len(candles[0]["x"]) == len(df) == len(outage_day)  # 1,360: no roll-up needed
    assert by_name(traces, "volume")["type"] == "bar" and len(by_name(traces, "volume")["y"]) == len(df)
    strategy = get_strategy_class("sma_cross")(params)
    strategy.signals(df)
    keys = set(strategy.get_indicators())
    assert keys == {"sma_fast", "sma_slow"} and keys <= {t.get("name") for t in traces}
    sma = by_name(traces, "sma_slow")
    assert sma["yaxis"] == candles[0].get("yaxis", "y")  # on the price, not an oscillator pane
    assert sma["y"][-1] == pytest.approx(float(strategy.get_indicators()["sma_slow"].iloc[-1]))

    bh = by_name(traces, "buy & hold")
    close = df["close"].to_numpy()
    assert bh["y"][-1] == pytest.approx(12_345.0 * close[-1] / close[0])
    assert by_name(traces, "equity")["yaxis"] == bh["yaxis"]

    trades = run.trades
    wins = [t for t in trades if t["pnl"] > 0]
    assert len(wins) and len(wins) < len(trades)
    win_seg, loss_seg = by_name(traces, "winning trades"), by_name(traces, "losing trades")
    assert segments(win_seg) + segments(loss_seg) == len(trades) == run.metrics["closed_trades"]
    assert (segments(win_seg), win_seg["line"]["color"], loss_seg["line"]["color"]) == (len(wins), "#0a7a32",
                                                                                        "#b3261e")
    assert len(by_name(traces, "entry")["x"]) == len(trades)
    reasons = {r: sum(t["exit_reason"] == r for t in trades) for r in ("stop_loss", "take_profit")}
    assert reasons["stop_loss"] > 0 and reasons["take_profit"] > 0
    assert len(by_name(traces, "stop-loss exit")["x"]) == reasons["stop_loss"]
    assert len(by_name(traces, "take-profit exit")["x"]) == reasons["take_profit"]

    # One formatter: money 2 decimals + separators, percentages 2 decimals + %, ISO UTC times.
    assert cells(html, 7) == [format_money(t["pnl"]) for t in trades[:1000]]
    assert all(MONEY.match(c) for c in cells(html, 7)) and all(PCT.match(c) for c in cells(html, 8))
    assert cells(html, 1)[0] == format_time(trades[0]["entry_time"]) and cells(html, 1)[0].endswith(" UTC")
    assert format_pct(run.metrics["total_return_pct"]) in html
    assert format_money(run.metrics["final_equity"]) in html and "12,345.00" in html
    assert f"Closed trades ({format_count(len(trades))}" in html


@pytest.mark.django_db
def test_given_a_run_as_a_fragment_when_reported_then_it_embeds_without_plotly_js_or_a_page(
        outage_day, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = services.create_run(strategy="sma_cross", parameters={"fast": 10, "slow": 50}, exchange=EX,
                                  symbol=SYM, timeframe=TF)
    run.refresh_from_db()
    fragment = report_for_run(run, full_html=False)
    dashboard = render_run_fragment(run)
    assert dashboard.lstrip().startswith('<div class="tb-report">') and len(dashboard) < 1_000_000
    assert fragment.lstrip().startswith('<div class="tb-report">') and "<html" not in fragment
    assert "Plotly.newPlot" in fragment and len(fragment) < 1_000_000  # plotly.js is the page's business
    assert len(report_for_run(run)) > len(fragment) + 1_000_000


def test_given_66k_1m_candles_when_reported_then_candles_are_rolled_up_but_every_trade_and_the_trough_stay(
        data_dir: Path):
    df = read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", timeframe=TF,
                         time_label="open")
    assert len(df) == 66_087
    result = services.run_in_memory(df, strategy="sma_cross", parameters={"fast": 5, "slow": 20}, timeframe=TF,
                                    rules_kwargs={})
    html = render_report(title="large", df=df, result=result)
    [traces] = figures(html)
    candles = next(t for t in traces if t["type"] == "candlestick")
    assert 1_000 < len(candles["x"]) <= MAX_CANDLES  # 66,087 1m candles drawn as 30m candles
    assert "rolled up to 30m" in html
    n = result.metrics["closed_trades"]
    assert n > 1_000 and n == len(result.to_dict()["trades"])
    assert len(by_name(traces, "entry")["x"]) == n
    assert segments(by_name(traces, "winning trades")) + segments(by_name(traces, "losing trades")) == n
    dd = by_name(traces, "drawdown %")
    assert len(dd["y"]) <= 5_000 < len(df)
    assert min(dd["y"]) == pytest.approx(result.metrics["max_drawdown_pct"], rel=1e-12)
    assert "first 1,000 shown; the chart shows all" in html


def test_given_an_oscillator_strategy_when_reported_then_its_indicator_gets_its_own_pane(data_dir: Path):
    df = read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-5m.csv.gz", timeframe="5m",
                         time_label="open")
    result = services.run_in_memory(df, strategy="rsi", parameters={}, timeframe="5m", rules_kwargs={})
    [traces] = figures(render_report(title="rsi", df=df, result=result))
    candles = next(t for t in traces if t["type"] == "candlestick")
    rsi = by_name(traces, "rsi")
    assert rsi["yaxis"] not in (candles.get("yaxis", "y"), by_name(traces, "volume")["yaxis"])
    finite = [v for v in rsi["y"] if v is not None and np.isfinite(v)]
    assert 0 <= min(finite) and max(finite) <= 100 and len(rsi["x"]) == len(candles["x"])


@pytest.mark.django_db
def test_given_a_grid_sweep_when_reported_then_the_heat_map_matches_the_grid_and_the_ranking_is_formatted(
        outage_day, django_capture_on_commit_callbacks):
    grid = {"fast": [5, 10, 20], "slow": [30, 50, 100, 200]}
    with django_capture_on_commit_callbacks(execute=True):
        sweep = services.create_sweep(strategy="sma_cross", grid=grid, chunk_size=4, top_k=5, exchange=EX,
                                      symbol=SYM, timeframe=TF, metric="total_return_pct")
    sweep.refresh_from_db()
    assert sweep.status == Status.DONE and sweep.total == 12
    html = sweep_report(sweep)
    [[heat]] = figures(html)
    assert heat["type"] == "heatmap"
    assert (heat["x"], heat["y"]) == (["5", "10", "20"], ["30", "50", "100", "200"])  # first two varied: fast, slow
    z = np.array(heat["z"], dtype=float)
    assert z.shape == (4, 3)
    by_set = {(r.parameters["fast"], r.parameters["slow"]): r.metrics["total_return_pct"]
              for r in sweep.results.all()}
    assert z[1, 2] == pytest.approx(by_set[(20, 50)])
    assert np.nanmax(z) == pytest.approx(sweep.ranking[0]["value"])
    assert format_pct(sweep.ranking[0]["value"]) in html and "fast=" in html



@pytest.mark.django_db(transaction=True)  # autocommit, as on the command line: the chord is sent on commit
def test_given_sweep_with_report_and_heatmap_when_run_then_the_file_has_the_chosen_axes(tmp_path, data_dir):
    out = tmp_path / "sweep.html"
    call_command("sweep", "--strategy", "sma_cross", "--grid", '{"fast": [5, 10, 20], "slow": [30, 50, 100, 200]}',
                 "--data", str(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1h.csv"), "--time-label", "open",
                 "--timeframe", "1h", "--report", str(out), "--heatmap", "slow,fast", stdout=StringIO(),
                 stderr=StringIO())
    [[heat]] = figures(out.read_text())
    assert (heat["x"], heat["y"]) == (["30", "50", "100", "200"], ["5", "10", "20"])
    assert np.array(heat["z"], dtype=float).shape == (3, 4)  # y = fast (3 values), x = slow (4)
    with pytest.raises(CommandError, match="heat-map parameter 'fastest'"):
        call_command("sweep", "--strategy", "sma_cross", "--grid", '{"fast": [5, 10], "slow": [30, 50]}',
                     "--data", str(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1h.csv"), "--time-label",
                     "open", "--timeframe", "1h", "--report", str(out), "--heatmap", "fastest,slow",
                     stdout=StringIO(), stderr=StringIO())


@pytest.mark.django_db
def test_given_a_walk_forward_study_when_reported_then_each_window_has_one_in_and_out_of_sample_pair(
        outage_day, tmp_path):
    study = services.create_and_run_walkforward(strategy="sma_cross", grid={"fast": [5, 10], "slow": [30, 50]},
                                                train=600, test="2h", exchange=EX, symbol=SYM, timeframe=TF)
    html = walkforward_report(WalkForward.objects.get(pk=study.pk))
    [traces] = figures(html)
    ins, oos = by_name(traces, "in-sample"), by_name(traces, "out-of-sample")
    n = len(study.windows)
    assert n >= 5 and len(ins["y"]) == len(oos["y"]) == n and ins["x"] == oos["x"]
    assert oos["y"][0] == pytest.approx(study.windows[0]["out_of_sample"]["sharpe"])
    assert len(by_name(traces, "out-of-sample equity")["x"]) > 0
    assert html.split("<h2>Windows", 1)[1].split("</table>", 1)[0].count("<tr><td>") == n


def test_given_a_csv_walk_forward_when_run_with_report_then_the_file_has_a_pair_per_window(tmp_path, data_dir):
    out = tmp_path / "wf.html"
    call_command("walkforward", "--strategy", "sma_cross", "--grid", '{"fast": [5, 10], "slow": [30, 50]}',
                 "--data", str(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1h.csv"), "--time-label", "open",
                 "--timeframe", "1h", "--train", "10d", "--test", "5d", "--report", str(out), "--json",
                 stdout=(buf := StringIO()), stderr=StringIO())
    windows = json.loads(buf.getvalue())["windows"]
    [traces] = figures(out.read_text())
    assert len(windows) >= 3
    assert len(by_name(traces, "in-sample")["y"]) == len(by_name(traces, "out-of-sample")["y"]) == len(windows)


def test_given_a_walk_forward_result_when_rendered_then_metrics_use_the_one_formatter():
    result = {"windows": [{"index": 0, "train_start": 1679616060000, "train_end": 1679652000000,
                           "test_start": 1679652060000, "test_end": 1679659200000, "parameters": {"fast": 5},
                           "in_sample": {"total_return_pct": 1.23456}, "out_of_sample": {"total_return_pct": -3.20458,
                                                                                         "closed_trades": 1234}}],
              "stitched_metrics": {"final_equity": 9679.5421, "total_return_pct": -3.20458},
              "stitched_equity": {"timestamp": [1679652060000, 1679659200000], "equity": [10000.0, 9679.5421]}}
    html = render_walkforward_report(title="t", result=result, metric="total_return_pct")
    assert "-3.20%" in html and "1.23%" in html and "9,679.54" in html and "1,234" in html
    text = re.sub(r"<script.*?</script>", "", html, flags=re.S)  # what people read (chart data stays raw)
    assert "2023-03-24 00:01 UTC" in text and "-3.20458" not in text
