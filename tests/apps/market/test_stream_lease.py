"""Scale-out: two real `manage.py stream` processes share a market through the Redis lease; kill -9 the owner and the
other takes the market over within 10 s, repairing the missed minutes from REST: no candle lost or doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.db import connection

from apps.market.aggregation import trades_to_candles
from apps.market.lease import Leases
from apps.market.models import Candle, Market, StreamRepair
from apps.market.selectors import candle_frame
from apps.market.testing.binance import load_tape
from tests.conftest import DATA_DIR

TF = 60_000
XRP = DATA_DIR / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz"
ROOT = DATA_DIR.parent
pytestmark = pytest.mark.django_db(transaction=True)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_given_two_stream_processes_when_the_owner_is_killed_then_the_other_takes_over_without_loss(redis_client):
    for key in redis_client.scan_iter("tradebot:stream:*"):
        redis_client.delete(key)
    tape = load_tape(XRP, symbol="XRP/ETH")
    speed = 30  # a recorded minute every 2 s
    start = int(tape.ts[0]) + 90 * TF + 20_000
    market = Market.objects.create(exchange="binance", symbol="XRP/ETH", timeframe="1m", provider="ccxt",
                                   watched=True, mode=Market.Mode.STREAM, stream_timeout=60)
    fake = subprocess.Popen(
        [sys.executable, "-m", "apps.market.testing.binance", "--tape", f"{XRP}:XRP/ETH", "--speed", str(speed),
         "--start-at", str(start)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    procs: list[subprocess.Popen] = []
    try:
        info = json.loads(fake.stdout.readline())
        db = connection.settings_dict
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tradebot.settings.test",
               "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
               "REDIS_URL": settings.REDIS_URL, "TRADEBOT_EXCHANGE_URLS": json.dumps({"binance": info["binance"]}),
               "TRADEBOT_STREAM_CLOCK_URL": info["clock_url"], "TRADEBOT_STREAM_GRACE_MS": str(speed * 100),
               "TRADEBOT_STREAM_LEASE_MS": "3000", "TRADEBOT_STREAM_RENEW_MS": "500"}
        for _ in range(2):
            procs.append(subprocess.Popen([sys.executable, "manage.py", "stream"], cwd=ROOT, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        leases = Leases("observer")
        holder = _wait(lambda: leases.holder(market.pk), 60, "a process to lease the market")
        owner = next(p for p in procs if f":{p.pid}:" in holder)
        other = next(p for p in procs if p is not owner)
        count = Candle.objects.filter(symbol="XRP/ETH").count
        _wait(lambda: count() >= 3, 60, "the owner to store candles")
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)
        killed_at = time.monotonic()
        _wait(lambda: (leases.holder(market.pk) or "").find(f":{other.pid}:") >= 0, 30, "the takeover")
        took = time.monotonic() - killed_at
        stored_at_kill = count()
        _wait(lambda: count() >= stored_at_kill + 4, 60, "candles after the takeover")
        other.send_signal(signal.SIGTERM)
        other.wait(timeout=30)
    finally:
        for p in [*procs, fake]:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    assert took <= 10
    got = candle_frame(exchange="binance", symbol="XRP/ETH", timeframe="1m")
    first, last = int(got["timestamp"].iat[0]), int(got["timestamp"].iat[-1])
    served = tape.frame(last)
    served = served[served["timestamp"] >= first - TF]
    want = trades_to_candles(served["timestamp"].to_numpy(), served["price"].to_numpy(), served["amount"].to_numpy(),
                             "1m")
    assert got["timestamp"].tolist() == want["timestamp"].tolist()  # none lost (unique key: none doubled)
    for col in ("open", "high", "low", "close"):
        assert got[col].tolist() == want[col].tolist(), col
    assert StreamRepair.objects.filter(market=market).count() >= 2  # start, then the takeover's repair
    assert Market.objects.get(pk=market.pk).stream_fence == 2
