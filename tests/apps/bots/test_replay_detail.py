"""replay_bot --detail 1m|trades: the replay through the real tick core (decide_fleet, candle by candle) resolves
ambiguous stop-loss/take-profit candles with the backtest's intrabar rule, so replay == backtest with the same
--detail still holds, on real stored raw trades and 1m candles; missing detail warns with the backtest's words."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.market.models import Candle
from tests.factories import store_btc_1h_with_1m, store_xrp_trades_with_5m

ROOT = Path(__file__).resolve().parents[3]
BTC = ROOT / "sample_data/binance_spot_2023"

pytestmark = pytest.mark.django_db


def command_json(*args: str) -> dict:
    out = StringIO()
    call_command(*args, stdout=out)
    return json.loads(out.getvalue().strip().splitlines()[-1])


def write_config(tmp_path: Path, **cfg) -> str:
    path = tmp_path / "bot.json"
    path.write_text(json.dumps({"name": "detail-bot", "strategy": "sma_cross", **cfg}))
    return str(path)


@pytest.fixture
def stored_xrp_trades():
    """Real Binance XRP/ETH raw trades and the 5m candles derived from them."""
    return store_xrp_trades_with_5m()


@pytest.fixture
def stored_btc():
    return store_btc_1h_with_1m()


def test_given_stored_raw_trades_when_replayed_with_trades_detail_then_it_equals_the_backtest_with_it(
        stored_xrp_trades, tmp_path):
    market = ["--exchange", "binance", "--symbol", "XRP/ETH", "--timeframe", "5m"]
    cfg = write_config(tmp_path, parameters={"fast": 3, "slow": 12}, exchange="binance", symbol="XRP/ETH",
                       timeframe="5m", stop_loss=0.002, take_profit=0.002)
    backtest = ["backtest", "--strategy", "sma_cross", "--params", '{"fast": 3, "slow": 12}', "--stop-loss",
                "0.002", "--take-profit", "0.002", "--json", *market]

    replayed = command_json("replay_bot", "--config", cfg, *market, "--detail", "trades", "--json")
    tested = command_json(*backtest, "--detail", "trades")
    plain = command_json("replay_bot", "--config", cfg, *market, "--json")

    assert len(replayed["trades"]) >= 3
    assert replayed["trades"] == tested["trades"]
    assert replayed["open_trade"] == tested["open_trade"] and replayed["final_equity"] == tested["final_equity"]
    want = tested["detail"]
    assert replayed["detail"] == {k: want[k] for k in ("source", "ambiguous_exits", "changed", "missing",
                                                       "untouched")}
    assert want["changed"] >= 1 and replayed["trades"] != plain["trades"]  # the detail really decided exits
    prices = set(stored_xrp_trades["price"].tolist())
    resolved = [b for a, b in zip(plain["trades"], replayed["trades"], strict=True)
                if (a["exit_reason"], a["exit_price"]) != (b["exit_reason"], b["exit_price"])]
    assert resolved and all(b["exit_price"] in prices for b in resolved)  # no slippage: the touching trade


def test_given_stored_1m_when_replayed_with_1m_detail_then_db_csv_and_backtest_agree_and_missing_detail_warns(
        stored_btc, tmp_path):
    market = ["--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h"]
    files = ["--data", str(BTC / "binance_BTC_USDT-1h.csv"), "--time-label", "open", "--timeframe", "1h"]
    cfg = write_config(tmp_path, parameters={"fast": 5, "slow": 20}, exchange="binance", symbol="BTC/USDT",
                       timeframe="1h", stop_loss=0.003, take_profit=0.003)
    backtest = ["backtest", "--strategy", "sma_cross", "--params", '{"fast": 5, "slow": 20}', "--stop-loss",
                "0.003", "--take-profit", "0.003", "--json"]

    replayed = command_json("replay_bot", "--config", cfg, *market, "--detail", "1m", "--json")
    from_csv = command_json("replay_bot", "--config", cfg, *files, "--detail", "1m", "--detail-data",
                            str(BTC / "binance_BTC_USDT-1m.csv.gz"), "--json")
    tested = command_json(*backtest, *market, "--detail", "1m")

    assert replayed["trades"] == tested["trades"] == from_csv["trades"]
    assert replayed["final_equity"] == tested["final_equity"]
    assert replayed["detail"]["ambiguous_exits"] == tested["detail"]["ambiguous_exits"] >= 10
    assert replayed["detail"]["changed"] == tested["detail"]["changed"] >= 1 and replayed["warnings"] == []

    t = next(x["exit_time"] for x in tested["trades"] if x["exit_reason"] in ("stop_loss", "take_profit"))
    Candle.objects.filter(exchange="binance", symbol="BTC/USDT", timeframe="1m", timestamp__gt=t - 3_600_000,
                          timestamp__lte=t).delete()
    replayed = command_json("replay_bot", "--config", cfg, *market, "--detail", "1m", "--json")
    tested = command_json(*backtest, *market, "--detail", "1m")
    assert replayed["detail"]["missing"] == tested["detail"]["missing"] >= 1
    assert replayed["warnings"] == [w for w in tested["warnings"] if w.startswith("detail 1m:")]
    assert any(f"({t})" in w and "conservative" in w for w in replayed["warnings"])
    assert replayed["trades"] == tested["trades"]


def test_given_trades_detail_on_a_csv_when_replayed_then_exit_2(tmp_path):
    cfg = write_config(tmp_path, parameters={"fast": 5, "slow": 20}, exchange="binance", symbol="BTC/USDT",
                       timeframe="1h", stop_loss=0.003)
    with pytest.raises(CommandError) as info:
        call_command("replay_bot", "--config", cfg, "--data", str(BTC / "binance_BTC_USDT-1h.csv"), "--time-label",
                     "open", "--detail", "trades")
    assert info.value.returncode == 2 and "--detail-data" in str(info.value)
