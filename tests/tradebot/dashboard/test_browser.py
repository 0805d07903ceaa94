"""Headless Chromium (Debian chromium + chromium-driver, installed by `make browser-deps`) with selenium against a
live gunicorn on real data (the recorded Binance BTC/USDT 1h sample): log in, open every dashboard page, check the
charts drew the expected number of points, a new signal appears without reload (SSE over Redis pub/sub), and a
`<script>` in a bot name stays text. Screenshots go to var/artifacts/."""

from __future__ import annotations

import shutil
import time

import orjson
import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User

from apps.backtest import services as backtest_services
from apps.bots import services as bot_services
from apps.bots.models import Bot
from apps.market.models import Market
from tests.factories import store_sample_candles
from tests.servers import ROOT, gunicorn_server
from tradebot.notify import signals_channel

ARTIFACTS = ROOT / "var" / "artifacts"
XSS_NAME = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">bot'
N_CANDLES = 400


def _wait(driver, script: str, timeout: float = 30.0):
    """Poll a JS expression until it is truthy (the page renders asynchronously); fails with the expression."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {script}")
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {script}")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        raise RuntimeError("chromium/chromedriver missing: run `make browser-deps` (apt-get install chromium "
                           "chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100",
                "--disable-gpu"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    yield driver
    driver.quit()


@pytest.mark.django_db(transaction=True)
def test_given_real_data_when_browsing_the_dashboard_then_charts_live_updates_and_no_script_injection(browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    df = store_sample_candles(timeframe="1h", nrows=N_CANDLES)
    market = Market.objects.get(exchange="binance", symbol="BTC/USDT", timeframe="1h")
    bot = bot_services.bot_create(data={"name": XSS_NAME, "strategy": "sma_cross",
                                        "parameters": {"fast": 5, "slow": 20}, "exchange": "binance",
                                        "symbol": "BTC/USDT", "timeframe": "1h"})
    bot_services.replay_bot(bot)  # real decisions over the stored candles: signals, trades, snapshots
    bot.refresh_from_db()
    n_perf = bot.performance.count()
    n_buys = bot.trades.filter(side="buy").count()
    assert n_perf > 0 and n_buys > 0
    run = backtest_services.create_run(strategy="sma_cross", parameters={"fast": 5, "slow": 20}, enqueue=False,
                                       exchange="binance", symbol="BTC/USDT", timeframe="1h")
    backtest_services.execute_run(run.pk)
    sweep = backtest_services.create_sweep(strategy="sma_cross", grid={"fast": [5, 10, 15], "slow": [20, 30]},
                                           enqueue=False, exchange="binance", symbol="BTC/USDT", timeframe="1h")
    sets = backtest_services.sweep_param_sets(sweep)
    backtest_services.execute_sweep_chunk(sweep.pk, 0, [[i, s] for i, s in enumerate(sets)])
    backtest_services.finish_sweep(sweep.pk)
    User.objects.create_user("viewer", password="viewer-pass-123")

    db = settings.DATABASES["default"]
    env = {"DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}", "DJANGO_DEBUG": "0",
           "CELERY_TASK_ALWAYS_EAGER": "0", "CELERY_BROKER_URL": "memory://",
           "CELERY_RESULT_BACKEND": "cache+memory://", "NOTIFY_BACKEND": "redis"}
    with gunicorn_server(env=env, workers=1, threads=8) as url:
        b = browser
        b.get(f"{url}/dashboard/")
        assert "/accounts/login/" in b.current_url  # login required
        b.find_element("name", "username").send_keys("viewer")
        b.find_element("name", "password").send_keys("viewer-pass-123")
        b.find_element("css selector", "input[type=submit]").click()
        _wait(b, "document.getElementById('fleet') !== null")
        assert b.execute_script("return document.querySelectorAll('#fleet tbody tr').length") == 1
        b.save_screenshot(str(ARTIFACTS / "dashboard-fleet.png"))

        b.get(f"{url}/dashboard/markets/{market.pk}/?range=all")
        points = _wait(b, "document.getElementById('chart').data && document.getElementById('chart').data[0].x.length")
        assert points == N_CANDLES
        assert b.execute_script("return document.getElementById('chart').data[1].y.length") == N_CANDLES
        b.save_screenshot(str(ARTIFACTS / "dashboard-market.png"))

        b.get(f"{url}/dashboard/bots/{bot.pk}/")
        _wait(b, "document.getElementById('chart').data")
        first_perf = bot.performance.order_by("timestamp").values_list("timestamp", flat=True).first()
        assert b.execute_script("return document.getElementById('chart').data[0].x.length") == int(
            (df["timestamp"] >= first_perf).sum())
        assert b.execute_script("return document.getElementById('chart').data[1].x.length") == n_buys
        assert b.execute_script("return document.getElementById('chart').data[3].y.length") == n_perf
        assert b.execute_script("return window.__xss") is None  # the injected script and handler never ran
        assert b.find_element("id", "bot-name").text == XSS_NAME
        _wait(b, "document.getElementById('live').textContent === 'live'")
        new_ts = int(df["timestamp"].iloc[-1]) + 3_600_000
        client = redis.Redis.from_url(settings.REDIS_URL)
        client.publish(signals_channel(bot.pk), orjson.dumps({"bot_id": bot.pk, "timestamp": new_ts,
                                                              "action": "buy", "confidence": 1.0, "price": 12345.67}))
        client.close()
        row = _wait(b, "document.querySelector('#signals tr.live-signal') && "
                       "document.querySelector('#signals tr.live-signal').textContent")
        assert "12345.67" in row and "buy" in row
        b.save_screenshot(str(ARTIFACTS / "dashboard-bot.png"))

        b.get(f"{url}/dashboard/runs/{run.pk}/")
        n_trades = len(run.__class__.objects.get(pk=run.pk).trades)
        traces = _wait(b, "document.querySelector('.plotly-graph-div') && "
                          "document.querySelector('.plotly-graph-div').data")
        assert traces[0]["type"] == "candlestick" and len(traces[0]["x"]) == N_CANDLES
        names = [t.get("name") for t in traces]
        assert "buy & hold" in names and "equity" in names
        entry = next(t for t in traces if t.get("name") == "entry")
        assert len(entry["x"]) == n_trades
        b.save_screenshot(str(ARTIFACTS / "dashboard-run.png"))

        b.get(f"{url}/dashboard/sweeps/{sweep.pk}/")
        z = _wait(b, "document.getElementById('heat').data && document.getElementById('heat').data[0].z")
        assert len(z) == 2 and all(len(row) == 3 for row in z)
        assert b.execute_script("return document.querySelectorAll('#ranking tbody tr').length") == 6
        b.save_screenshot(str(ARTIFACTS / "dashboard-sweep.png"))
    assert Bot.objects.get(pk=bot.pk).name == XSS_NAME
