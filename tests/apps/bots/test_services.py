"""Bots trade by the backtest's rules: a bot replayed over a period makes exactly the backtest's trades."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from apps.backtest.engine.run import run_backtest
from apps.bots import services
from apps.bots.config import BotConfigError, load_config_file
from apps.bots.models import Bot, BotPerformance, Signal, Trade
from apps.bots.strategies.registry import create_strategy
from apps.bots.trading.fills import FillRules
from apps.market.services import ingest_candles
from tests.factories import BotFactory

pytestmark = pytest.mark.django_db(transaction=True)

MARKET = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m"}


@pytest.fixture
def btc_1m(data_dir) -> pd.DataFrame:
    df = pd.read_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", nrows=4000)
    df["timestamp"] = df["timestamp"] + 60_000  # open -> close label
    return df[["timestamp", "open", "high", "low", "close", "volume"]]


@pytest.fixture
def stored(btc_1m) -> pd.DataFrame:
    ingest_candles(**MARKET, df=btc_1m, publish=False)
    return btc_1m


def make_bot(name: str = "b1", strategy: str = "sma_cross", parameters: dict | None = None, **extra) -> Bot:
    return BotFactory(name=name, strategy=strategy, parameters=parameters or {"fast": 10, "slow": 50}, **MARKET,
                      **extra)


def bot_trades(bot: Bot) -> list[tuple]:
    return [(t.timestamp, t.side, t.reason, t.price, t.amount, t.fee) for t in bot.trades.order_by("timestamp", "id")]


def backtest_trades(df: pd.DataFrame, strategy: str, params: dict, rules: FillRules) -> tuple[list[tuple], float]:
    result = run_backtest(df, create_strategy(strategy, params), rules, "1m")
    fills = []
    for t in result.to_dict()["trades"]:
        fills.append((t["entry_time"], "buy"))
        fills.append((t["exit_time"], "sell", t["exit_reason"]))
    if result.open_trade:
        fills.append((result.open_trade["entry_time"], "buy"))
    return fills, result.final_equity


@pytest.mark.parametrize(
    ("strategy", "params", "extra"),
    [
        ("sma_cross", {"fast": 10, "slow": 50}, {}),
        ("rsi", {"period": 14, "oversold": 30, "overbought": 70}, {"stop_loss": 0.004, "take_profit": 0.006}),
        ("bollinger", {"period": 20, "k": 2.0}, {"slippage": 0.0005, "fraction": 0.5}),
    ],
)
def test_given_stored_candles_when_bot_is_replayed_then_it_makes_the_backtests_trades(stored, strategy, params, extra):
    bot = make_bot(strategy=strategy, parameters=params, **extra)
    start, end = int(stored["timestamp"].iloc[0]), int(stored["timestamp"].iloc[-1])

    report = services.replay_bot(bot, start=start, end=end)

    bot.refresh_from_db()
    expected, final_equity = backtest_trades(stored, strategy, params, services.rules_for(bot))
    got = []
    for ts, side, reason, *_ in bot_trades(bot):
        got.append((ts, side) if side == "buy" else (ts, side, reason))
    assert report.decided == len(stored)
    assert len(got) >= 4
    assert got == expected
    last_close = float(stored["close"].iloc[-1])
    assert bot.cash + bot.position * last_close == pytest.approx(final_equity, rel=1e-12)
    assert Signal.objects.filter(bot=bot).count() == len(stored)
    assert BotPerformance.objects.filter(bot=bot).count() == len(stored)


def test_given_a_running_bot_when_ticked_in_pieces_then_it_equals_one_replay(stored):
    whole = make_bot("whole")
    services.replay_bot(whole, start=int(stored["timestamp"].iloc[0]))
    pieces = make_bot("pieces")
    services.arm_replay(pieces, start=int(stored["timestamp"].iloc[0]))
    for cut in (120, 121, 1500, 2999, len(stored) - 1):
        services.tick_bot(pieces.pk, until=int(stored["timestamp"].iloc[cut]))

    assert bot_trades(pieces) == bot_trades(whole)
    pieces.refresh_from_db()
    whole.refresh_from_db()
    assert pieces.cash == whole.cash and pieces.position == whole.position
    assert pieces.last_candle_timestamp == int(stored["timestamp"].iloc[-1])


def test_given_a_decided_candle_when_ticked_again_then_nothing_is_decided_twice(stored):
    bot = make_bot()
    services.replay_bot(bot, start=int(stored["timestamp"].iloc[0]))
    before = Signal.objects.filter(bot=bot).count()

    report = services.tick_bot(bot.pk)

    assert report.skipped == "no new candle"
    assert Signal.objects.filter(bot=bot).count() == before


def test_given_running_bot_when_new_candles_are_ingested_then_they_are_ticked_through_celery(btc_1m):
    ingest_candles(**MARKET, df=btc_1m.iloc[:3000], publish=False)
    bot = make_bot()
    services.arm_replay(bot, start=int(btc_1m["timestamp"].iloc[0]))
    services.tick_bot(bot.pk)

    ingest_candles(**MARKET, df=btc_1m.iloc[3000:3010], publish=True)

    bot.refresh_from_db()
    assert bot.last_candle_timestamp == int(btc_1m["timestamp"].iloc[3009])
    assert Signal.objects.filter(bot=bot).count() == 3010


def test_given_a_broken_bot_when_market_ticks_then_others_still_trade(stored):
    good = make_bot("good")
    broken = make_bot("broken")
    for bot in (good, broken):
        services.arm_replay(bot, start=int(stored["timestamp"].iloc[0]))
    Bot.objects.filter(pk=broken.pk).update(parameters={"fast": 80, "slow": 50})  # invalid: fast >= slow

    reports = services.tick_market(**MARKET)

    good.refresh_from_db()
    broken.refresh_from_db()
    assert good.last_candle_timestamp == int(stored["timestamp"].iloc[-1])
    assert broken.failed_at is not None  # the monitor restarts it (tests/apps/bots/test_supervision.py)
    assert "fast" in broken.last_error
    assert {r.bot_id for r in reports} == {good.pk, broken.pk}


def test_given_stopped_bot_when_ticked_then_it_does_nothing(stored):
    bot = make_bot()
    services.stop_bot(bot)

    report = services.tick_bot(bot.pk)

    assert report.skipped == "status stopped"
    assert not Trade.objects.filter(bot=bot).exists()


def test_given_config_dir_when_synced_twice_then_bots_are_created_once(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"name": "a", "strategy": "sma_cross", "parameters": {"fast": 5},
                                                 **MARKET}))
    services.sync_bots_from_configs(tmp_path)
    services.sync_bots_from_configs(tmp_path)

    bot = Bot.objects.get(name="a")
    assert bot.parameters == {"fast": 5, "slow": 50}
    assert bot.config_file == "a.json"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"name": "x", "strategy": "nope", "exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m"}',
         "field 'strategy'"),
        ('{"name": "x", "strategy": "sma_cross", "exchange": "binance", "symbol": "BTC/USDT", "timeframe": "2m"}',
         "field 'timeframe': unknown timeframe '2m'"),
        ('{"name": "x", "strategy": "sma_cross", "parameters": {"fast": 0}, "exchange": "binance",'
         ' "symbol": "BTC/USDT", "timeframe": "1m"}', "'fast'"),
        ('{"name": "x", "strategy": "sma_cross", "exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m",'
         ' "fee_rate": -1}', "field 'fee_rate'"),
        ('{"name": "x",', "line 1 column"),
    ],
)
def test_given_bad_config_when_loaded_then_error_names_file_and_field(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)

    with pytest.raises(BotConfigError) as err:
        load_config_file(path)

    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_given_shipped_configs_when_loaded_then_they_are_valid(settings):
    from apps.bots.config import load_config_dir

    configs = load_config_dir(settings.TRADEBOT_BOT_CONFIG_DIR)
    assert {c.name for _, c in configs} >= {"btc-sma-cross-1h", "eth-rsi-5m"}
    assert np.all([c.fee_rate == 0.001 for _, c in configs])


@pytest.fixture
def form_strategies():
    from apps.bots.strategies import registry
    from tests.apps.bots.strategies.forms import FORMS

    before = dict(registry._REGISTRY)
    for cls in FORMS:
        registry.register(cls)
    yield [cls.name for cls in FORMS]
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def test_given_one_strategy_in_three_forms_when_bots_replay_it_then_identical_trades_equal_to_the_backtest(
    stored, form_strategies
):
    start = int(stored["timestamp"].iloc[0])
    got = []
    for i, name in enumerate(form_strategies):
        bot = make_bot(name=f"form{i}", strategy=name, parameters={"window": 30}, stop_loss=0.003)
        services.replay_bot(bot, start=start)
        got.append(bot_trades(bot))
    assert len(got[0]) >= 4
    assert got[1] == got[0] and got[2] == got[0]
    expected, _ = backtest_trades(stored, form_strategies[0], {"window": 30}, services.rules_for(bot))
    assert [(ts, side) if side == "buy" else (ts, side, reason) for ts, side, reason, *_ in got[0]] == expected
