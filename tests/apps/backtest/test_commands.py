"""backtest / sweep / walkforward commands: --data needs no database (subprocess without DATABASE_URL), exit codes,
--json shapes, the offline report, and the DB paths through call_command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.backtest.engine.run import run_backtest
from apps.backtest.models import BacktestRun, Status, Sweep, WalkForward
from apps.bots.strategies.registry import get_strategy_class
from apps.bots.trading.fills import FillRules
from apps.market.csvio import read_candle_csv
from apps.market.services import ingest_candles

ROOT = Path(__file__).resolve().parents[3]
BTC_5M = "sample_data/binance_spot_2023/binance_BTC_USDT-5m.csv.gz"


def manage(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """manage.py in a fresh process on the embedded default: no DATABASE_URL/REDIS_URL, data dir in tmp."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    env.update(DJANGO_SETTINGS_MODULE="tradebot.settings.base", TRADEBOT_DATA_DIR=str(tmp_path / "var"))
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_given_a_csv_when_backtesting_with_json_then_one_object_equal_to_the_engine_and_no_database(tmp_path):
    out = manage(tmp_path, "backtest", "--strategy", "sma_cross", "--params", '{"fast": 10, "slow": 50}',
                 "--data", BTC_5M, "--time-label", "open", "--timeframe", "5m", "--json")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert set(payload) == {"metrics", "trades", "open_trade", "final_equity", "warnings"}
    df = read_candle_csv(ROOT / BTC_5M, timeframe="5m", time_label="open")
    ref = run_backtest(df, get_strategy_class("sma_cross")({"fast": 10, "slow": 50}), FillRules(), "5m").to_dict()
    assert payload["final_equity"] == ref["final_equity"]
    assert payload["trades"] == ref["trades"] and len(payload["trades"]) == payload["metrics"]["closed_trades"]
    assert any("16 candles missing" in w for w in payload["warnings"])  # the 2023-03-24 outage in 5m
    assert not (tmp_path / "var" / "tradebot.sqlite3").exists()  # the ORM was never touched


def test_given_a_time_range_and_rules_when_backtesting_then_they_apply(tmp_path):
    out = manage(tmp_path, "backtest", "--strategy", "sma_cross", "--data", BTC_5M, "--time-label", "open",
                 "--timeframe", "5m", "--start", "2023-04-01", "--end", "1680652800000", "--fee", "0",
                 "--initial-balance", "1000", "--json")
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)["metrics"]
    assert m["start"] == 1680307200000 and m["end"] == 1680652800000
    assert m["initial_balance"] == 1000 and m["fees_paid"] == 0


def test_given_report_path_when_backtesting_then_an_offline_html_report_is_written(tmp_path):
    report = tmp_path / "report.html"
    out = manage(tmp_path, "backtest", "--strategy", "sma_cross", "--data", BTC_5M, "--time-label", "open",
                 "--timeframe", "5m", "--report", str(report))
    assert out.returncode == 0, out.stderr
    assert "sharpe" in out.stdout and "closed trades:" in out.stdout
    html = report.read_text()
    assert re.search(r"<script[^>]*\bsrc=", html) is None
    assert "cdn.plot.ly/plotly" not in re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.S)
    assert "Plotly.newPlot" in html and "Closed trades" in html


@pytest.mark.parametrize(("args", "message"), [
    (["--strategy", "nope"], "unknown strategy 'nope'"),
    (["--strategy", "sma_cross", "--params", '{"fast": 10'], "--params is not valid JSON"),
    (["--strategy", "sma_cross", "--params", '{"fast": 80, "slow": 50}'], "'fast' must be < slow"),
    (["--strategy", "sma_cross", "--params", '{"fast": "x"}'], "fast"),
    (["--strategy", "sma_cross", "--fee", "2"], "fee"),
])
def test_given_bad_input_when_backtesting_then_one_line_and_exit_2(tmp_path, args, message):
    out = manage(tmp_path, "backtest", *args, "--data", BTC_5M, "--time-label", "open", "--timeframe", "5m")
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert out.stdout == ""


def test_given_data_without_time_label_when_backtesting_then_exit_2_names_the_flag(tmp_path):
    out = manage(tmp_path, "backtest", "--strategy", "sma_cross", "--data", BTC_5M, "--timeframe", "5m")
    assert out.returncode == 2 and "--time-label" in out.stderr


def test_given_a_csv_when_walking_forward_with_json_then_windows_and_stitched_metrics(tmp_path):
    out = manage(tmp_path, "walkforward", "--strategy", "sma_cross", "--grid", '{"fast": [5, 10], "slow": [50, 100]}',
                 "--data", BTC_5M, "--time-label", "open", "--timeframe", "5m", "--train", "10d", "--test", "5d",
                 "--json")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    n = 13217
    assert len(payload["windows"]) == (n - 2880 - 1440) // 1440 + 1
    assert payload["stitched_metrics"]["bars"] == 1440 * len(payload["windows"])
    assert all(w["parameters"]["fast"] in (5, 10) for w in payload["windows"])
    assert not (tmp_path / "var" / "tradebot.sqlite3").exists()


@pytest.fixture
def stored_5m(data_dir):
    df = read_candle_csv(data_dir / "binance_spot_2023" / "binance_ETH_USDT-5m.csv.gz", timeframe="5m",
                         time_label="open").iloc[:3000]
    ingest_candles(exchange="binance", symbol="ETH/USDT", timeframe="5m", df=df, publish=False)
    return df


@pytest.mark.django_db
def test_given_stored_candles_when_backtesting_by_market_then_the_run_is_stored(stored_5m):
    out = StringIO()
    call_command("backtest", "--strategy", "ema_cross", "--exchange", "binance", "--symbol", "ETH/USDT",
                 "--timeframe", "5m", "--json", stdout=out, stderr=StringIO())
    payload = json.loads(out.getvalue())
    run = BacktestRun.objects.get()
    assert run.status == Status.DONE and run.final_equity == payload["final_equity"]
    assert payload["metrics"]["bars"] == len(stored_5m)


@pytest.mark.django_db(transaction=True)  # autocommit, as on the command line: the chord is sent on commit
def test_given_stored_candles_when_sweeping_eagerly_then_json_has_the_top_k(stored_5m):
    out = StringIO()
    call_command("sweep", "--strategy", "sma_cross", "--random", "8", "--seed", "3", "--space",
                 '{"fast": [3, 20], "slow": [30, 120]}', "--exchange", "binance", "--symbol", "ETH/USDT",
                 "--timeframe", "5m", "--top", "3", "--chunk-size", "3", "--metric", "total_return_pct",
                 "--json", stdout=out, stderr=StringIO())
    payload = json.loads(out.getvalue())
    sweep = Sweep.objects.get()
    assert payload["sweep_id"] == sweep.pk and payload["status"] == "done"
    assert payload["total"] == 8 and payload["completed"] == 8 and len(payload["ranking"]) == 3
    values = [r["value"] for r in payload["ranking"]]
    assert values == sorted(values, reverse=True)


@pytest.mark.django_db
def test_given_an_unknown_grid_parameter_when_sweeping_then_exit_2(stored_5m):
    with pytest.raises(CommandError, match="unknown parameter 'fastest'") as info:
        call_command("sweep", "--strategy", "sma_cross", "--grid", '{"fastest": [5]}', "--exchange", "binance",
                     "--symbol", "ETH/USDT", "--timeframe", "5m")
    assert info.value.returncode == 2 and Sweep.objects.count() == 0


@pytest.mark.django_db
def test_given_stored_candles_when_walking_forward_by_market_then_the_study_is_stored(stored_5m):
    out = StringIO()
    call_command("walkforward", "--strategy", "sma_cross", "--grid", '{"fast": [5, 10], "slow": [30, 60]}',
                 "--exchange", "binance", "--symbol", "ETH/USDT", "--timeframe", "5m", "--train", "1000",
                 "--test", "500", "--step", "1000", stdout=out, stderr=StringIO())
    study = WalkForward.objects.get()
    assert study.status == Status.DONE and len(study.windows) == 2
    assert "stitched out-of-sample" in out.getvalue()
    assert any("skips the bars" in w for w in study.error.split("; "))


@pytest.mark.django_db
def test_given_an_unknown_metric_when_sweeping_then_exit_2_listing_the_valid_names():
    with pytest.raises(CommandError) as info:
        call_command("sweep", "--strategy", "sma_cross", "--grid", '{"fast": [5]}', "--metric", "nope",
                     "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "5m")
    assert info.value.returncode == 2
    assert "unknown metric 'nope': expected one of" in str(info.value) and "sharpe" in str(info.value)
    assert Sweep.objects.count() == 0


def test_given_a_csv_when_walking_forward_then_windows_and_stitched_times_print_as_dates(tmp_path):
    out = manage(tmp_path, "walkforward", "--strategy", "sma_cross", "--grid", '{"fast": [5, 10], "slow": [40]}',
                 "--train", "2000", "--test", "1000", "--data", BTC_5M, "--time-label", "open", "--timeframe", "5m")
    assert out.returncode == 0, out.stderr
    window = next(line for line in out.stdout.splitlines() if line.strip().startswith("window 0"))
    assert " UTC" in window and "2023-" in window
    start = next(line for line in out.stdout.splitlines() if line.strip().startswith("start:"))
    assert "UTC" in start and not start.split(":", 1)[1].strip().isdigit()


@pytest.fixture
def allocator_calls(monkeypatch):
    """The modules that call tradebot.memory.tune_allocator (the engine must make none; a compute command one)."""
    from tradebot import memory

    calls = []

    def record() -> bool:
        calls.append(sys._getframe(1).f_globals["__name__"])
        return True

    monkeypatch.setattr(memory, "tune_allocator", record)
    return calls


@pytest.mark.django_db
@pytest.mark.parametrize("command", ["backtest", "sweep", "walkforward"])
def test_given_a_compute_command_when_it_starts_then_it_tunes_the_allocator_and_the_engine_does_not(
        command, allocator_calls, stored_5m):
    args = {"backtest": ["--strategy", "sma_cross"],
            "sweep": ["--strategy", "sma_cross", "--grid", '{"fast": [5], "slow": [30]}'],
            "walkforward": ["--strategy", "sma_cross", "--grid", '{"fast": [5], "slow": [30]}', "--train", "1000",
                            "--test", "500"]}[command]
    call_command(command, *args, "--exchange", "binance", "--symbol", "ETH/USDT", "--timeframe", "5m", "--json",
                 stdout=StringIO(), stderr=StringIO())
    # the command's own call, where the process starts; run_backtest / run_chunk never tune the process
    assert allocator_calls == [f"apps.backtest.management.commands.{command}"]
