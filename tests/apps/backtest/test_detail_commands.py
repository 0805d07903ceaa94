"""backtest --detail 1m|trades on stored data: the report (ambiguous exits, changed, metric difference), the CSV path
giving the same result, missing detail as a warning naming the candle, raw trades as the detail source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.market.models import Candle
from tests.factories import store_btc_1h_with_1m, store_xrp_trades_with_5m

ROOT = Path(__file__).resolve().parents[3]
BTC = ROOT / "sample_data/binance_spot_2023"
ARGS = ["--strategy", "sma_cross", "--params", '{"fast": 5, "slow": 20}', "--stop-loss", "0.003",
        "--take-profit", "0.003", "--json"]

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored_btc():
    return store_btc_1h_with_1m()


def run(capsys, *args: str) -> dict:
    call_command("backtest", *args)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_given_stored_1m_when_backtesting_1h_with_detail_then_the_report_and_the_csv_path_agree(stored_btc, capsys):
    db = ["--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h"]
    plain = run(capsys, *ARGS, *db)
    detailed = run(capsys, *ARGS, *db, "--detail", "1m")
    det = detailed["detail"]
    assert "detail" not in plain
    assert det["source"] == "1m" and det["ambiguous_exits"] >= 10 and det["changed"] >= 1 and det["missing"] == 0
    assert det["metrics_candle_only"] == plain["metrics"]
    assert det["metric_diff"]["final_equity"] == pytest.approx(detailed["final_equity"] - plain["final_equity"])
    assert [t["exit_time"] for t in detailed["trades"]] == [t["exit_time"] for t in plain["trades"]]
    csv = run(capsys, *ARGS, "--data", str(BTC / "binance_BTC_USDT-1h.csv"), "--time-label", "open", "--timeframe",
              "1h", "--detail", "1m", "--detail-data", str(BTC / "binance_BTC_USDT-1m.csv.gz"))
    assert csv["trades"] == detailed["trades"] and csv["detail"]["changed"] == det["changed"]


def test_given_missing_1m_for_an_ambiguous_candle_when_backtesting_with_detail_then_a_warning_names_it(
        stored_btc, capsys):
    db = ["--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h"]
    plain = run(capsys, *ARGS, *db)
    ambiguous = next(t for t in plain["trades"] if t["exit_reason"] in ("stop_loss", "take_profit"))
    t = ambiguous["exit_time"]
    Candle.objects.filter(exchange="binance", symbol="BTC/USDT", timeframe="1m", timestamp__gt=t - 3_600_000,
                          timestamp__lte=t).delete()
    detailed = run(capsys, *ARGS, *db, "--detail", "1m")
    assert detailed["detail"]["missing"] >= 1
    assert any(f"({t})" in w and "conservative" in w for w in detailed["warnings"])
    exit_same = next(x for x in detailed["trades"] if x["exit_time"] == t)
    assert (exit_same["exit_reason"], exit_same["exit_price"]) == (ambiguous["exit_reason"], ambiguous["exit_price"])


def test_given_stored_raw_trades_when_backtesting_with_trades_detail_then_exits_fill_at_trade_prices(capsys):
    trades = store_xrp_trades_with_5m()
    args = ["--strategy", "sma_cross", "--params", '{"fast": 3, "slow": 12}', "--stop-loss", "0.002",
            "--take-profit", "0.002", "--json", "--exchange", "binance", "--symbol", "XRP/ETH", "--timeframe", "5m"]
    plain = run(capsys, *args)
    detailed = run(capsys, *args, "--detail", "trades")
    det = detailed["detail"]
    assert det["ambiguous_exits"] >= 3 and det["missing"] == 0
    prices = set(trades["price"].tolist())
    changed = [(a, b) for a, b in zip(plain["trades"], detailed["trades"], strict=True) if a != b]
    assert len(changed) >= 1
    resolved = [b for a, b in changed if a["exit_reason"] != "signal" and (a["exit_reason"], a["exit_price"]) != (
        b["exit_reason"], b["exit_price"])]
    assert resolved and all(b["exit_price"] in prices for b in resolved)  # no slippage: the touching trade's price


def test_given_detail_trades_with_a_csv_when_backtesting_then_exit_2():
    with pytest.raises(CommandError) as info:
        call_command("backtest", *ARGS, "--data", str(BTC / "binance_BTC_USDT-1h.csv"), "--time-label", "open",
                     "--timeframe", "1h", "--detail", "trades")
    assert info.value.returncode == 2
