"""The bot commands: sync_bots, bot start/stop/status, replay_bot (no database with --data), reconcile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from django.core.management import call_command

from apps.bots.models import Bot
from apps.market.services import ingest_candles

ROOT = Path(__file__).resolve().parents[3]
CSV_1H = ROOT / "sample_data" / "binance_spot_2023" / "binance_BTC_USDT-1h.csv"
MARKET = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"}


def run(*args: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code)
    return code, out.getvalue(), err.getvalue()


def config(name: str, **extra) -> dict:
    return {"name": name, "strategy": "sma_cross", "parameters": {"fast": 5, "slow": 20}, **MARKET, **extra}


@pytest.mark.django_db(transaction=True)
def test_given_a_bad_file_among_good_ones_when_synced_then_one_line_names_it_and_the_rest_load(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(config("a")))
    (tmp_path / "b.json").write_text(json.dumps(config("b", fraction=3)))
    (tmp_path / "fleet.json").write_text(json.dumps({"template": config("f"), "grid": {"fast": [5, 8],
                                                                                          "slow": [20, 30]}}))

    code, out, err = run("sync_bots", "--dir", str(tmp_path))

    assert code == 2
    assert err.strip().count("\n") == 0 and "b.json" in err and "fraction" in err
    assert sorted(Bot.objects.values_list("name", flat=True)) == [
        "a", "f-fast5-slow20", "f-fast5-slow30", "f-fast8-slow20", "f-fast8-slow30"]
    assert Bot.objects.get(name="f-fast8-slow30").parameters == {"fast": 8, "slow": 30}


@pytest.mark.django_db(transaction=True)
def test_given_synced_bots_when_started_and_status_asked_then_json_reports_each(tmp_path, data_dir):
    df = pd.read_csv(CSV_1H).iloc[:300]
    df["timestamp"] += 3_600_000
    ingest_candles(**MARKET, df=df, publish=False)
    for name in ("x", "y"):
        (tmp_path / f"{name}.json").write_text(json.dumps(config(name)))
    run("sync_bots", "--dir", str(tmp_path))

    assert run("bot", "start", "x")[0] == 0
    code, out, _ = run("bot", "status", "--json")

    rows = {r["name"]: r for r in json.loads(out)["bots"]}
    assert code == 0 and rows["x"]["status"] == "running" and rows["y"]["status"] == "stopped"
    assert rows["x"]["last_decided"] is None and rows["x"]["restarts_last_hour"] == 0
    assert rows["x"]["equity"] == 10_000.0
    assert Bot.objects.get(name="x").last_candle_timestamp == int(df["timestamp"].iloc[-1])
    run("bot", "stop", "--all")
    assert set(Bot.objects.values_list("status", flat=True)) == {"stopped"}
    with pytest.raises(Exception, match="unknown bot 'nope'"):
        call_command("bot", "start", "nope")


def test_given_a_csv_when_replayed_without_a_database_then_it_equals_the_backtest(tmp_path):
    cfg = tmp_path / "rsi.json"
    cfg.write_text(json.dumps({**config("r"), "strategy": "rsi", "parameters": {"period": 14},
                               "stop_loss": 0.03, "take_profit": 0.05}))
    env = {**os.environ, "DATABASE_URL": "postgres://nobody@127.0.0.1:1/no_such_db", "DJANGO_SETTINGS_MODULE":
           "tradebot.settings.test"}
    args = ["--data", str(CSV_1H), "--time-label", "open", "--timeframe", "1h", "--json"]
    replay = subprocess.run([sys.executable, "manage.py", "replay_bot", "--config", str(cfg), *args], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    backtest = subprocess.run([sys.executable, "manage.py", "backtest", "--strategy", "rsi", "--params",
                               '{"period": 14}', "--stop-loss", "0.03", "--take-profit", "0.05", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)

    assert replay.returncode == 0, replay.stderr
    got, want = json.loads(replay.stdout), json.loads(backtest.stdout)
    assert len(got["trades"]) >= 3
    assert got["trades"] == want["trades"]
    assert got["open_trade"] == want["open_trade"] and got["final_equity"] == want["final_equity"]
    assert got["signals"] == len(pd.read_csv(CSV_1H))


@pytest.mark.django_db(transaction=True)
def test_given_a_live_bot_when_reconciled_then_match_and_a_tampered_fill_is_named(tmp_path):
    from apps.bots import services

    df = pd.read_csv(CSV_1H)
    df["timestamp"] += 3_600_000
    ingest_candles(**MARKET, df=df.iloc[:200], publish=False)
    bot = Bot.objects.create(name="live", strategy="ema_cross", parameters={"fast": 5, "slow": 20}, **MARKET)
    services.start_bot(bot)
    ingest_candles(**MARKET, df=df.iloc[200:], publish=True)
    assert bot.trades.count() >= 4

    code, out, _ = run("reconcile", "live", "--json")
    assert code == 0 and json.loads(out)["match"] is True

    trade = bot.trades.order_by("timestamp")[2]
    type(trade).objects.filter(pk=trade.pk).update(fee=trade.fee * 1.01)
    code, out, _ = run("reconcile", "live", "--json")
    result = json.loads(out)
    assert code == 1 and result["divergence"]["timestamp"] == trade.timestamp
    assert result["divergence"]["what"] == "fee"
