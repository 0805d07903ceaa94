"""The fleet tick: a started bot trades only after its start; shards decide many bots at once, exactly once."""

from __future__ import annotations

import pandas as pd
import pytest
from django.db import transaction

from apps.bots import services
from apps.bots.models import Bot, BotPerformance, Signal, Trade
from apps.bots.strategies.registry import create_strategy
from apps.bots.trading.candles import CandleArrays
from apps.bots.trading.fills import FillRules
from apps.bots.trading.fleet import BotTick, decide_fleet, warmup_rows
from apps.market.services import ingest_candles

pytestmark = pytest.mark.django_db(transaction=True)

MARKET = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m"}


@pytest.fixture
def btc_1m(data_dir) -> pd.DataFrame:
    df = pd.read_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", nrows=3000)
    df["timestamp"] = df["timestamp"] + 60_000
    return df[["timestamp", "open", "high", "low", "close", "volume"]]


def make_bot(name: str, strategy: str = "sma_cross", parameters: dict | None = None, **extra) -> Bot:
    return Bot.objects.create(name=name, strategy=strategy, parameters=parameters or {"fast": 5, "slow": 20},
                              **MARKET, **extra)


def fills(bot: Bot) -> list[tuple]:
    return list(bot.trades.order_by("timestamp", "side").values_list("timestamp", "side", "reason", "price", "amount",
                                                                      "fee"))


@pytest.mark.parametrize(("strategy", "params"), [("sma_cross", {"fast": 5, "slow": 20}),
                                                   ("ema_cross", {"fast": 5, "slow": 20})])
def test_given_stored_history_when_a_bot_starts_then_it_decides_only_candles_after_its_start(btc_1m, strategy,
                                                                                            params):
    ingest_candles(**MARKET, df=btc_1m.iloc[:2000], publish=False)
    bot = make_bot("late", strategy, params)

    services.start_bot(bot)
    services.tick_bot(bot.pk)
    ingest_candles(**MARKET, df=btc_1m.iloc[2000:2100], publish=True)  # eager: ticks through the receiver

    bot.refresh_from_db()
    first_new = int(btc_1m["timestamp"].iloc[2000])
    stamps = list(bot.signals.values_list("timestamp", flat=True))
    assert len(stamps) == 100 and min(stamps) == first_new
    assert not bot.trades.filter(timestamp__lt=first_new).exists()
    rows = warmup_rows(create_strategy(strategy, params))
    assert bot.history_start == int(btc_1m["timestamp"].iloc[2000 - rows])
    assert bot.restart_count == 0 and bot.restart_times == []


def test_given_a_started_bot_then_its_trades_equal_a_backtest_from_its_history_start_trading_after_start(btc_1m):
    from apps.bots.trading.fills import simulate

    ingest_candles(**MARKET, df=btc_1m.iloc[:1000], publish=False)
    bot = make_bot("twin", "ema_cross", {"fast": 5, "slow": 20})
    services.start_bot(bot)
    ingest_candles(**MARKET, df=btc_1m.iloc[1000:], publish=True)
    bot.refresh_from_db()

    frame = btc_1m[btc_1m["timestamp"] >= bot.history_start].reset_index(drop=True)
    action = create_strategy("ema_cross", {"fast": 5, "slow": 20}).signals(frame)["action"].to_numpy().copy()
    action[frame["timestamp"].to_numpy() <= int(btc_1m["timestamp"].iloc[999])] = 0
    sim = simulate(frame["timestamp"], frame["open"], frame["high"], frame["low"], frame["close"], action,
                   services.rules_for(bot))
    expected = []
    for t in sim.trade_dicts():
        expected += [(t["entry_time"], "buy"), (t["exit_time"], "sell")]
    if sim.open_trade:
        expected.append((sim.open_trade["entry_time"], "buy"))
    assert len(expected) >= 4
    assert [(t, s) for t, s, *_ in fills(bot)] == expected
    assert bot.cash + bot.position * float(frame["close"].iloc[-1]) == pytest.approx(sim.final_equity, rel=1e-12)


def test_given_a_stopped_bot_when_restarted_then_it_skips_the_gap_unless_catch_up(btc_1m):
    ingest_candles(**MARKET, df=btc_1m.iloc[:500], publish=False)
    skip, catch = make_bot("skip"), make_bot("catch")
    for bot in (skip, catch):
        services.start_bot(bot)
    ingest_candles(**MARKET, df=btc_1m.iloc[500:600], publish=True)
    for bot in (skip, catch):
        services.stop_bot(bot)
    ingest_candles(**MARKET, df=btc_1m.iloc[600:700], publish=True)  # missed while stopped

    services.start_bot(skip)
    services.start_bot(catch, catch_up=True)
    services.tick_market(**MARKET)

    gap = btc_1m["timestamp"].iloc[600:700].tolist()
    assert not Signal.objects.filter(bot=skip, timestamp__in=gap).exists()
    assert Signal.objects.filter(bot=catch, timestamp__in=gap).count() == 100
    assert Signal.objects.filter(bot=catch).count() == 200


def test_given_many_bots_when_one_shard_ticks_then_each_equals_its_own_replay(btc_1m):
    ingest_candles(**MARKET, df=btc_1m, publish=False)
    start = int(btc_1m["timestamp"].iloc[0])
    grid = [("sma_cross", {"fast": f, "slow": s}) for f, s in ((5, 20), (10, 50))] + [
        ("rsi", {"period": 14, "oversold": 30, "overbought": 70}), ("bollinger", {"period": 20, "k": 2.0})]
    fleet, solo = [], []
    for i, (strategy, params) in enumerate(grid * 2):
        extra = {"stop_loss": 0.004, "take_profit": 0.006} if i % 3 == 0 else {}
        fleet.append(make_bot(f"fleet{i}", strategy, params, **extra))
        solo.append(make_bot(f"solo{i}", strategy, params, **extra))
    for bot in fleet:
        services.arm_replay(bot, start=start)
    for cut in (500, 501, 1700, len(btc_1m) - 1):
        services.tick_shard([b.pk for b in fleet], until=int(btc_1m["timestamp"].iloc[cut]))
    for bot in solo:
        services.replay_bot(bot, start=start)

    for a, b in zip(fleet, solo, strict=True):
        assert fills(a) == fills(b)
        assert a.signals.count() == b.signals.count() == len(btc_1m)
        snap = lambda bot: list(bot.performance.order_by("timestamp").values_list("equity", "drawdown"))  # noqa: E731
        assert snap(a) == snap(b)
    assert sum(Trade.objects.filter(bot=b).count() for b in fleet) >= 20


def test_given_a_shard_redelivered_then_nothing_is_decided_twice(btc_1m):
    ingest_candles(**MARKET, df=btc_1m.iloc[:600], publish=False)
    bots = [make_bot(f"b{i}") for i in range(3)]
    for bot in bots:
        services.arm_replay(bot, start=int(btc_1m["timestamp"].iloc[0]))
    ids = [b.pk for b in bots]

    first = services.tick_shard(ids)
    again = services.tick_shard(ids)

    assert first.decided == 1800 and again.decided == 0
    assert Signal.objects.filter(bot__in=bots).count() == 1800
    assert BotPerformance.objects.filter(bot__in=bots).count() == 1800


def test_given_candles_of_many_markets_announced_together_then_their_bots_are_ticked_in_packed_shards(btc_1m,
                                                                                                       settings):
    from apps.market.services import announce_together

    settings.TRADEBOT_TICK_SHARD_SIZE = 5
    markets = [{**MARKET, "symbol": symbol} for symbol in ("BTC/USDT", "ETH/USDT", "SOL/USDT")]  # BTC candles on all
    bots = {}
    for market in markets:
        ingest_candles(**market, df=btc_1m.iloc[:100], publish=False)
        bots[market["symbol"]] = [Bot.objects.create(name=f"{market['symbol']}-{j}", strategy="sma_cross",
                                                     parameters={"fast": 5, "slow": 20}, **market) for j in range(3)]
        for bot in bots[market["symbol"]]:
            services.start_bot(bot)
    stopped = bots["ETH/USDT"][0]
    services.stop_bot(stopped)
    running = [b.pk for m in markets for b in bots[m["symbol"]] if b != stopped]

    shards = services.fleet_shards([(m["exchange"], m["symbol"], m["timeframe"]) for m in markets])

    assert shards == [running[:5], running[5:]]  # 8 running bots of 3 markets: 2 tasks, not 3 (by market, then id)

    with announce_together(), transaction.atomic():  # eager Celery: the shards run when the block ends
        for market in markets:
            ingest_candles(**market, df=btc_1m.iloc[100:101], publish=True)

    new = int(btc_1m["timestamp"].iloc[100])
    assert sorted(Signal.objects.filter(timestamp=new).values_list("bot_id", flat=True)) == sorted(running)
    assert not Signal.objects.filter(bot=stopped).exists()


def test_given_a_bot_whose_strategy_raises_then_the_shard_still_decides_the_others(btc_1m):
    ingest_candles(**MARKET, df=btc_1m.iloc[:300], publish=False)
    good, broken = make_bot("good"), make_bot("broken")
    for bot in (good, broken):
        services.arm_replay(bot, start=int(btc_1m["timestamp"].iloc[0]))
    Bot.objects.filter(pk=broken.pk).update(parameters={"fast": 80, "slow": 50})

    report = services.tick_shard([good.pk, broken.pk])

    good.refresh_from_db()
    broken.refresh_from_db()
    assert report.decided == 300 and list(report.errors) == [broken.pk]
    assert good.last_candle_timestamp == int(btc_1m["timestamp"].iloc[299]) and good.failed_at is None
    assert broken.failed_at is not None and "fast" in broken.last_error and not broken.signals.exists()


def test_given_frames_without_a_database_when_decided_candle_by_candle_then_equal_to_one_pass(btc_1m):
    candles = CandleArrays.from_frame(btc_1m.iloc[:800])
    rules = FillRules(stop_loss=0.004)
    whole = decide_fleet(candles, [BotTick.fresh(1, "sma_cross", {"fast": 5, "slow": 20}, rules, history_start=0)])
    state = BotTick.fresh(1, "sma_cross", {"fast": 5, "slow": 20}, rules, history_start=0)
    trades = []
    for end in range(1, 801):
        step = decide_fleet(CandleArrays.from_frame(btc_1m.iloc[:end]), [state])
        trades += step.trades_of(1)
        state = step.states[1]
    assert trades == whole.trades_of(1) and len(trades) >= 4
    assert state.cash == whole.states[1].cash
