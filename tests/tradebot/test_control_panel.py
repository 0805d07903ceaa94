"""The admin as control panel: bot status at a glance, lifecycle/backtest/replay actions through the services,
runs and sweeps with reports and follow-up actions, links to the dashboard, the API docs and Flower."""

from __future__ import annotations

import pytest

from apps.backtest import services as backtest_services
from apps.backtest.models import BacktestRun, Sweep
from apps.bots.models import Bot, Signal, Trade
from tests.factories import BotFactory, store_sample_candles

pytestmark = pytest.mark.django_db


def _action(admin_client, url: str, action: str, ids: list[int]):
    return admin_client.post(url, {"action": action, "_selected_action": [str(i) for i in ids]}, follow=True)


def test_given_bots_when_listing_them_then_equity_position_heartbeat_restarts_and_links_show(admin_client):
    bot = BotFactory(name="<script>alert(1)</script>")
    Bot.objects.filter(pk=bot.pk).update(position=0.5, entry_price=20_000.0, last_error="boom",
                                         restart_times=[10**13])
    html = admin_client.get("/admin/bots/bot/").content.decode()
    assert "0.5 @ 20,000.00" in html and "10,000.00" in html and "never" in html and "boom" in html
    assert f"/dashboard/bots/{bot.pk}/" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    for link in ("/dashboard/", "/api/v1/docs/", "http://127.0.0.1:5555/"):
        assert link in html


def test_given_a_bot_with_activity_when_opening_it_then_recent_signals_and_trades_are_inline(admin_client):
    bot = BotFactory()
    sig = Signal.objects.create(bot=bot, timestamp=1_700_000_000_000, action="buy", price=30_000.0)
    Trade.objects.create(bot=bot, signal=sig, timestamp=1_700_000_000_000, side="buy", price=30_000.0, amount=0.1,
                         fee=3.0, cash_after=6_997.0, position_after=0.1)
    html = admin_client.get(f"/admin/bots/bot/{bot.pk}/change/").content.decode()
    assert "2023-11-14 22:13" in html and "30,000.00" in html and "Recent signals and trades" in html


def test_given_stopped_bots_when_restart_action_runs_then_they_run_through_the_services(admin_client):
    bots = [BotFactory(), BotFactory()]
    _action(admin_client, "/admin/bots/bot/", "restart_bots", [b.pk for b in bots])
    assert set(Bot.objects.values_list("status", flat=True)) == {"running"}


def test_given_a_bot_when_backtest_this_config_runs_then_a_run_of_its_config_is_stored(admin_client):
    store_sample_candles(timeframe="1h", nrows=200)
    bot = BotFactory(timeframe="1h", parameters={"fast": 5, "slow": 20}, fraction=0.5)
    resp = _action(admin_client, "/admin/bots/bot/", "backtest_bot_config", [bot.pk])
    run = BacktestRun.objects.get()
    assert (run.strategy, run.parameters["fast"], run.fraction, run.timeframe) == ("sma_cross", 5, 0.5, "1h")
    assert f"backtest run {run.pk} queued" in resp.content.decode()


def test_given_a_done_run_when_sweeping_around_it_then_a_bounded_grid_sweep_is_stored(admin_client):
    store_sample_candles(timeframe="1h", nrows=200)
    run = backtest_services.create_run(strategy="sma_cross", parameters={"fast": 10, "slow": 40}, enqueue=False,
                                       exchange="binance", symbol="BTC/USDT", timeframe="1h")
    backtest_services.execute_run(run.pk)
    html = admin_client.get("/admin/backtest/backtestrun/").content.decode()
    assert f"/api/v1/backtest/runs/{run.pk}/report/" in html
    _action(admin_client, "/admin/backtest/backtestrun/", "sweep_around_run", [run.pk])
    sweep = Sweep.objects.get()
    assert sweep.space == {"fast": [5, 10, 15], "slow": [20, 40, 60]} and sweep.total == 9


def test_given_a_done_sweep_when_turning_its_best_sets_into_bots_then_stopped_bots_carry_them(admin_client):
    store_sample_candles(timeframe="1h", nrows=300)
    sweep = backtest_services.create_sweep(strategy="sma_cross", grid={"fast": [5, 10], "slow": [30]}, top_k=2,
                                           enqueue=False, exchange="binance", symbol="BTC/USDT", timeframe="1h")
    backtest_services.execute_sweep_chunk(sweep.pk, 0, [[0, {"fast": 5, "slow": 30}], [1, {"fast": 10, "slow": 30}]])
    backtest_services.finish_sweep(sweep.pk)
    _action(admin_client, "/admin/backtest/sweep/", "make_bots_top5", [sweep.pk])
    bots = Bot.objects.order_by("name")
    assert [b.name.split("-")[:2] for b in bots] == [[f"sweep{sweep.pk}", "1"], [f"sweep{sweep.pk}", "2"]]
    assert {b.status for b in bots} == {"stopped"} and {b.parameters["slow"] for b in bots} == {30}


def test_given_a_market_with_an_open_gap_when_listing_and_backfilling_then_coverage_shows_and_a_backfill_is_queued(
        admin_client, monkeypatch, django_capture_on_commit_callbacks):
    from apps.market import tasks
    from apps.market.models import DataGap, Market

    df = store_sample_candles(timeframe="1h", nrows=50)
    market = Market.objects.get(exchange="binance", symbol="BTC/USDT", timeframe="1h")
    DataGap.objects.create(market=market, start_timestamp=int(df["timestamp"].iloc[-1]) + 3_600_000,
                           end_timestamp=int(df["timestamp"].iloc[-1]) + 7_200_000, missing=2)
    html = admin_client.get("/admin/market/market/").content.decode()
    assert "50 candles" in html and "1 open gaps (2 missing)" in html
    sent = []
    monkeypatch.setattr(tasks.backfill_task, "delay", lambda *args: sent.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        _action(admin_client, "/admin/market/market/", "backfill_open_gaps", [market.pk])
    assert sent == [("binance", "BTC/USDT", "1h", int(df["timestamp"].iloc[-1]), int(df["timestamp"].iloc[-1])
                     + 7_200_000)]
