"""manage.py check_strategy: a table, exit 0 for the built-ins, exit 1 for a strategy with a lookahead bug, exit 2 for
bad input; from a CSV file (fresh process, no database) or stored candles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.market.csvio import read_candle_csv
from apps.market.services import ingest_candles

ROOT = Path(__file__).resolve().parents[3]
ETH_15M = "sample_data/binance_spot_2023/binance_ETH_USDT-15m.csv"
BUGGY = "tests.apps.bots.strategies.forms.LookaheadBreakout"


def manage(tmp_path: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    env.update(DJANGO_SETTINGS_MODULE="tradebot.settings.base", TRADEBOT_DATA_DIR=str(tmp_path / "var"), **env_extra)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_given_a_builtin_when_checked_from_a_csv_then_a_table_and_exit_0(tmp_path):
    out = manage(tmp_path, "check_strategy", "rsi", "--params", '{"period": 14}', "--data", ETH_15M,
                 "--time-label", "open", "--timeframe", "15m", "--rows", "300")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lookahead" in out.stdout and "warm-up" in out.stdout and "parameters" in out.stdout
    assert "PROBLEM" not in out.stdout and "no problem found" in out.stdout


def test_given_a_user_strategy_with_a_shift_minus_one_when_checked_then_exit_1_naming_the_lookahead(tmp_path):
    out = manage(tmp_path, "check_strategy", "test_lookahead_breakout", "--params", '{"window": 20}',
                 "--data", ETH_15M, "--time-label", "open", "--timeframe", "15m", "--rows", "500", "--json",
                 TRADEBOT_STRATEGIES=BUGGY)
    assert out.returncode == 1, out.stdout + out.stderr
    payload = json.loads(out.stdout.strip().splitlines()[0])
    assert payload["ok"] is False
    assert {r["check"] for r in payload["rows"] if not r["ok"]} == {"lookahead"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope_strategy"], "unknown strategy"),
        (["sma_cross", "--params", '{"fast": 0}'], "'fast' must be >= 1"),
        (["sma_cross", "--params", "[1]"], "JSON object"),
    ],
)
def test_given_bad_input_when_checking_then_exit_2_with_one_line(tmp_path, args, message):
    out = manage(tmp_path, "check_strategy", *args, "--data", ETH_15M, "--time-label", "open", "--timeframe", "15m")
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.django_db
def test_given_stored_candles_when_checked_then_the_same_checks_run_on_them(capsys):
    df = read_candle_csv(ROOT / ETH_15M, timeframe="15m", time_label="open")
    ingest_candles(exchange="binance", symbol="ETH/USDT", timeframe="15m", df=df, publish=False)
    call_command("check_strategy", "ema_cross", "--exchange", "binance", "--symbol", "ETH/USDT", "--timeframe",
                 "15m", "--rows", "200", "--json")
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["ok"] is True and payload["warmup_needed"] > 100
    with pytest.raises(CommandError) as info:
        call_command("check_strategy", "ema_cross", "--exchange", "binance", "--symbol", "ETH/USDT")
    assert info.value.returncode == 2
