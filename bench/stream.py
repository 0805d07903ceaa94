"""Benchmark: live candles through the stream role vs beat polling, against the loopback fake Binance. ONE JSON line.

Real recorded trades (Binance XRP/ETH, sample_data/freqtrade_xrp_eth; cloned under 20 symbols with shifted ids for the
20-market runs) are replayed by the fake exchange in a SEPARATE process (python -m apps.market.testing.binance) at
1x and 50x their recorded rate. This process runs one StreamProcess (ccxt.pro watch_trades -> CandleBuilder ->
ingest into PostgreSQL -> publish after commit) and a Redis subscriber on `market:*`:

* latency = wall time the `market:` message is seen minus the wall time the fake's clock passed the candle's close
  (grace = 250 ms of wall time at every speed), p50/p99 over live candles (REST-repaired start-up minutes excluded);
* polling baseline in the same run, against the same server: `CcxtProvider.fetch_candles` (fetch_ohlcv) every beat
  interval (the default 60 s of replay time: 60 s of wall time at 1x, 1.2 s at 50x), latency = when a poll returns
  the candle minus its close; `targets` gives the poll/stream ratio of medians;
* throughput: the fake pushes all trades of 20 markets as fast as it can (speed 1e6); trades/s = trades aggregated
  and stored by the one stream process per second of wall time, with raw trades off and on (COPY into partitions),
  timed until the candles (and raw trades) are committed, not merely received; cpu_s = CPU seconds the stream process
  (all its threads) and the fake exchange process used in that window; the raw-off flood runs twice, with the lean
  Binance trade path (apps.market.providers.lean_trades, the default) and with ccxt.pro's own parsing as baseline,
  then once more read by bare aiohttp websockets that only decode the JSON (the transport floor: the most trades/s
  any client of this transport gets on this machine, before ccxt.pro, candles or the database);
* breakdown_ms: p50/p99 of each stage of a live candle (close -> writer, writer queue, write+commit+publish,
  publish -> subscriber).

Durations: BENCH_STREAM_SECONDS (default 150 s per 1x run, 60 s per 50x run). Phases: BENCH_STREAM_THROUGHPUT=0 /
BENCH_STREAM_LATENCY=0 skip one; BENCH_STREAM_RAW (default "0,1": raw trades off, on), BENCH_STREAM_MARKETS,
BENCH_STREAM_SPEEDS, BENCH_STREAM_FLOOD_MARKETS choose the runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradebot.settings.test")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import redis  # noqa: E402
from django.conf import settings  # noqa: E402

from apps.market.models import Candle, DataGap, Market, RawTrade, StreamRepair  # noqa: E402
from apps.market.providers.lean_trades import LEAN_TRADE_EXCHANGES, lean_client_class  # noqa: E402
from apps.market.stream import StreamProcess, make_clock, run_loop  # noqa: E402
from apps.market.testing.binance import load_tape  # noqa: E402

TF = 60_000
XRP = ROOT / "sample_data" / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz"
SECONDS_1X = float(os.environ.get("BENCH_STREAM_SECONDS", "150"))
SECONDS_50X = float(os.environ.get("BENCH_STREAM_SECONDS_50X", "60"))
BEAT_S = 60.0


RUN_TAG = f"{os.getpid() % 100_000:05d}"


def symbols(n: int) -> list[str]:
    """Bench-only names (the real XRP/ETH trades under other symbols), unique to this run: Redis pub/sub is shared by
    every database number, so another run's `market:` messages must not be counted."""
    return [f"B{RUN_TAG}{i:02d}/ETH" for i in range(n)]


def write_tapes(n: int, tmp: Path) -> list[str]:
    """CSV tapes for n markets: the real XRP/ETH trades, and clones with other names and disjoint ids."""
    df = pd.read_csv(XRP)
    specs = []
    for i, sym in enumerate(symbols(n)):
        path = tmp / f"tape_{i}.csv"
        if not path.exists():
            out = df.copy()
            out["id"] = out["id"] + i * 10_000_000
            out.to_csv(path, index=False)
        specs.append(f"{path}:{sym}")
    return specs


def start_fake(specs: list[str], speed: float, start_at: int, wait: int = 0) -> tuple[subprocess.Popen, dict]:
    args = [sys.executable, "-m", "apps.market.testing.binance", "--speed", str(speed), "--start-at", str(start_at),
            "--wait-subscribers", str(wait)]
    for spec in specs:
        args += ["--tape", spec]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def forget(syms: list[str]) -> None:
    """This run's bench markets and their data, gone: left watched in stream mode, a later `manage.py stream` on the
    same database would try to stream them."""
    Candle.objects.filter(exchange="binance", symbol__in=syms).delete()
    RawTrade.objects.filter(exchange="binance", symbol__in=syms).delete()
    Market.objects.filter(exchange="binance", symbol__in=syms).delete()


def reset(syms: list[str], *, raw: bool) -> list[int]:
    forget(syms)
    from apps.market.lease import fence_key, lease_key

    r = redis.Redis.from_url(settings.REDIS_URL)
    ids = []
    for sym in syms:
        m = Market.objects.create(exchange="binance", symbol=sym, timeframe="1m", provider="ccxt", watched=True,
                                  mode=Market.Mode.STREAM, store_raw_trades=raw, stream_timeout=600)
        ids.append(m.pk)
        r.delete(lease_key(m.pk), fence_key(m.pk))
    assert not StreamRepair.objects.filter(market_id__in=ids).exists() and not DataGap.objects.filter(
        market_id__in=ids).exists()
    return ids


class Subscriber(threading.Thread):
    def __init__(self, syms: list[str]) -> None:
        super().__init__(daemon=True)
        self.syms = set(syms)
        self.seen: list[tuple[str, int, float]] = []
        self.client = redis.Redis.from_url(settings.REDIS_URL)
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe(f"market:B{RUN_TAG}*")
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            msg = self.pubsub.get_message(timeout=0.2)
            if msg and msg["type"] == "pmessage":
                t = time.time()
                payload = json.loads(msg["data"])
                if (payload.get("exchange") == "binance" and payload.get("timeframe") == "1m"
                        and payload.get("symbol") in self.syms and not payload.get("corrected")):
                    self.seen.append((payload["symbol"], int(payload["timestamp"]), t))


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def run_latency(n: int, speed: float, seconds: float, tmp: Path) -> dict:
    syms = symbols(n)
    ids = reset(syms, raw=False)
    tape = load_tape(XRP, symbol="XRP/ETH")
    start_at = int(tape.ts[0]) + 120 * TF + 20_000
    fake, info = start_fake(write_tapes(n, tmp), speed, start_at)
    clock_info = json.loads(subprocess.check_output(["curl", "-s", info["clock_url"]]))
    data0, wall0 = clock_info["data_ms"], clock_info["wall_ms"] / 1000.0

    def wall_of(data_ms: int) -> float:
        return wall0 + (data_ms - data0) / speed / 1000.0

    settings.TRADEBOT_EXCHANGE_URLS = {"binance": info["binance"]}
    sub = Subscriber(syms)
    sub.start()
    poll_lat: list[float] = []
    poll_stop = threading.Event()

    def poller() -> None:
        from apps.market.providers.ccxt import CcxtProvider, make_client

        provider = CcxtProvider("binance", client=make_client("binance"), clock=clock)
        last: dict[str, int | None] = {s: None for s in syms}
        while not poll_stop.wait(BEAT_S / speed if last[syms[0]] is not None else 0.0):
            for s in syms:
                for page in provider.fetch_candles(s, "1m", since=last[s]):
                    now = time.time()
                    for t in page["timestamp"].tolist():
                        if last[s] is not None:  # the first poll is history, not live
                            poll_lat.append((now - wall_of(int(t))) * 1000.0)
                    last[s] = int(page["timestamp"].iat[-1]) if len(page) else last[s]
                if last[s] is None:
                    last[s] = clock() // TF * TF

    clock = make_clock(info["clock_url"])
    poll_thread = threading.Thread(target=poller, daemon=True)
    poll_thread.start()
    live_from = start_at + int(10 * speed * 1000) + 2 * TF  # candles after start-up (10 s of wall) are live ones

    async def main() -> StreamProcess:
        proc = StreamProcess(market_ids=ids, clock=clock, grace_ms=int(250 * speed))
        task = asyncio.create_task(proc.run())
        await asyncio.sleep(seconds)
        proc.stop()
        await task
        return proc

    proc = run_loop(main())
    poll_stop.set()
    sub.stop = True
    sub.join(timeout=5)
    poll_thread.join(timeout=120)
    fake.kill()
    fake.wait()
    lat = [(t - wall_of(ts)) * 1000.0 for _s, ts, t in sub.seen if ts >= live_from]
    trades = sum(s.stats.trades for s in proc.streams.values())
    return {"markets": n, "speed": speed, "seconds": seconds, "live_candles": len(lat),
            "stream_p50_ms": pct(lat, 50), "stream_p99_ms": pct(lat, 99), "poll_candles": len(poll_lat),
            "poll_p50_ms": pct(poll_lat, 50), "poll_p99_ms": pct(poll_lat, 99), "trades": trades,
            "breakdown_ms": breakdown(proc, sub.seen, wall_of, live_from)}


def breakdown(proc: StreamProcess, seen: list[tuple[str, int, float]], wall_of, live_from: int) -> dict:
    """Where a live candle's latency goes, p50/p99 of each stage: close -> handed to the writer (grace + timer),
    waiting for a writer thread, the write (validate, upsert, ledger, commit, publish), publish -> seen."""
    when = {(sym, ts): t for sym, ts, t in seen}
    stages: dict[str, list[float]] = {"close_to_writer": [], "writer_queue": [], "write_commit_publish": [],
                                      "to_subscriber": []}
    for stream in proc.streams.values():
        for ts, flushed, started, done in stream.stats.timings:
            if ts < live_from:
                continue
            stages["close_to_writer"].append((flushed - wall_of(ts)) * 1000.0)
            stages["writer_queue"].append((started - flushed) * 1000.0)
            stages["write_commit_publish"].append((done - started) * 1000.0)
            t = when.get((stream.market.symbol, ts))
            if t is not None:
                stages["to_subscriber"].append((t - done) * 1000.0)
    return {k: [pct(v, 50), pct(v, 99)] for k, v in stages.items()}


@contextlib.contextmanager
def ccxt_pro_parsing():
    """The stream's clients without the lean trade path (apps.market.providers.lean_trades): ccxt.pro's own
    handle_message for every trade, the in-run baseline of the lean path."""
    lean_client_class.cache_clear()
    try:
        with mock.patch.dict(LEAN_TRADE_EXCHANGES, clear=True):
            yield
    finally:
        lean_client_class.cache_clear()


def run_throughput(n: int, raw: bool, tmp: Path, *, parser: str = "lean") -> dict:
    if parser == "ccxt.pro":
        with ccxt_pro_parsing():
            return run_throughput(n, raw, tmp) | {"parser": parser}
    syms = symbols(n)
    ids = reset(syms, raw=raw)
    tape = load_tape(XRP, symbol="XRP/ETH")
    start_at = int(tape.ts[0]) + TF + 1
    fake, info = start_fake(write_tapes(n, tmp), 1e6, start_at, wait=n)  # the flood starts once all subscribed
    settings.TRADEBOT_EXCHANGE_URLS = {"binance": info["binance"]}
    clock = lambda: start_at  # noqa: E731 - the flood: candles are closed by the next trades, not by the clock
    live = tape.ts[int(np.searchsorted(tape.ts, start_at, side="right")):]
    total = n * len(live)
    # "aggregated and stored": the run ends when the candles (and raw trades) are in PostgreSQL, not when the trades
    # were received; the last bucket never closes (the clock is frozen), so 99 % of each.
    want_candles = n * (len(np.unique(live // TF)) - 1)
    boundary = (start_at // TF) * TF + TF
    want_raw = n * int((live >= boundary).sum()) if raw else 0

    async def main() -> tuple[StreamProcess, float, float]:
        proc = StreamProcess(market_ids=ids, clock=clock, grace_ms=10_000_000)
        task = asyncio.create_task(proc.run())
        first = None
        cpu0: tuple[float, float] = (0.0, 0.0)
        t_end = time.monotonic() + 300
        while time.monotonic() < t_end:
            streams = list(proc.streams.values())
            got = sum(s.stats.trades for s in streams)
            if got and first is None:
                first = (time.monotonic(), got)
                cpu0 = (cpu_seconds(os.getpid()), cpu_seconds(fake.pid))
            candles = sum(s.stats.candles + s.stats.repaired_candles for s in streams)
            raw_rows = sum(s.stats.raw_trades for s in streams)
            if got >= total * 0.99 and candles >= want_candles * 0.99 and raw_rows >= want_raw * 0.99:
                break
            await asyncio.sleep(0.01)
        done = time.monotonic()
        cpu["stream"] = round(cpu_seconds(os.getpid()) - cpu0[0], 2)
        cpu["fake"] = round(cpu_seconds(fake.pid) - cpu0[1], 2)
        proc.stop()
        await task
        return proc, first, done

    cpu: dict[str, float] = {}
    proc, first, done = run_loop(main())
    fake.kill()
    fake.wait()
    if first is None:
        return {"markets": n, "raw_trades": raw, "error": "no trade arrived within 300 s"}
    trades = sum(s.stats.trades for s in proc.streams.values())  # the first batch counts: it is stored too
    stored = Candle.objects.filter(exchange="binance", symbol__in=syms).count()
    raw_rows = RawTrade.objects.filter(exchange="binance", symbol__in=syms).count()
    return {"markets": n, "raw_trades": raw, "parser": "lean", "trades": trades, "seconds": round(done - first[0], 2),
            "trades_per_s": round(trades / max(done - first[0], 1e-9)), "candles_stored": stored,
            "raw_rows_stored": raw_rows, "cpu_s": cpu,
            "writer": {"batches": proc.writer.batches, "writes": proc.writer.writes},
            "drops": sum(s.stats.drops for s in proc.streams.values()),
            "repairs": sum(s.stats.repairs for s in proc.streams.values())}


def run_transport_floor(n: int, tmp: Path) -> dict:
    """The same flood read by bare aiohttp websockets (permessage-deflate offered as ccxt.pro offers it) that only
    decode each message's JSON: what any Python client of this transport pays per trade before doing anything with it
    (no ccxt.pro, no candles, no database). The ceiling the stream's trades/s is measured against."""
    import aiohttp
    import orjson

    syms = symbols(n)
    tape = load_tape(XRP, symbol="XRP/ETH")
    start_at = int(tape.ts[0]) + TF + 1
    total = n * int((tape.ts > start_at).sum())
    fake, info = start_fake(write_tapes(n, tmp), 1e6, start_at, wait=n)
    url = info["binance"]["ws"] + "/ws"

    async def main() -> tuple[int, float, float, float]:
        got = 0
        started: list[float] = []
        done = asyncio.Event()

        async def read(session: aiohttp.ClientSession, sym: str) -> None:
            nonlocal got
            async with session.ws_connect(url, compress=15, autoping=False, max_msg_size=10485760) as ws:
                await ws.send_str(json.dumps({"method": "SUBSCRIBE", "id": 1,
                                              "params": [sym.replace("/", "").lower() + "@aggTrade"]}))
                async for msg in ws:
                    message = orjson.loads(msg.data)
                    if "e" not in message:
                        continue  # the subscription reply
                    if not started:
                        started.append(time.monotonic())
                        started.append(cpu_seconds(os.getpid()))
                    got += 1
                    if got >= total:
                        done.set()

        async with aiohttp.ClientSession() as session:
            readers = [asyncio.create_task(read(session, sym)) for sym in syms]
            await asyncio.wait_for(done.wait(), timeout=300)
            end, cpu_end = time.monotonic(), cpu_seconds(os.getpid())
            for r in readers:
                r.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        return got, end - started[0], cpu_end - started[1], cpu_seconds(fake.pid)

    try:
        got, seconds, cpu, fake_cpu = run_loop(main())
    finally:
        fake.kill()
        fake.wait()
    return {"markets": n, "parser": "aiohttp websocket + orjson only (transport floor)", "trades": got,
            "seconds": round(seconds, 2), "trades_per_s": round(got / max(seconds, 1e-9)),
            "cpu_s": {"client": round(cpu, 2), "fake_total": round(fake_cpu, 2)}}


def main() -> None:
    tmp = ROOT / "var" / "bench_stream"
    tmp.mkdir(parents=True, exist_ok=True)
    out: dict = {"bench": "stream", "latency": [], "throughput": []}
    markets = [int(x) for x in os.environ.get("BENCH_STREAM_MARKETS", "1,20").split(",")]
    raws = [x == "1" for x in os.environ.get("BENCH_STREAM_RAW", "0,1").split(",")]
    flood = int(os.environ.get("BENCH_STREAM_FLOOD_MARKETS", "20"))
    speeds = [float(x) for x in os.environ.get("BENCH_STREAM_SPEEDS", "1,50").split(",")]
    try:
        for raw in raws if os.environ.get("BENCH_STREAM_THROUGHPUT", "1") == "1" else ():
            out["throughput"].append(run_throughput(flood, raw, tmp))
            if not raw:  # the baselines: the same flood through ccxt.pro's own parsing, and the bare transport
                out["throughput"].append(run_throughput(flood, raw, tmp, parser="ccxt.pro"))
                out["throughput"].append(run_transport_floor(flood, tmp))
        for n in markets if os.environ.get("BENCH_STREAM_LATENCY", "1") == "1" else []:
            for speed in speeds:
                out["latency"].append(run_latency(n, speed, SECONDS_1X if speed == 1.0 else SECONDS_50X, tmp))
    finally:
        forget(symbols(max([*markets, flood])))
    out["targets"] = targets(out)
    print(json.dumps(out))


def targets(out: dict) -> dict:
    """The issue's targets against this run's figures, and the in-run baseline (polling fetch_ohlcv at the default
    beat interval, same server, same run) as a ratio of medians."""
    result: dict = {}
    for row in out["throughput"]:
        if row.get("parser") != "lean":
            continue
        key = "trades_per_s_raw_" + ("on" if row.get("raw_trades") else "off")
        want = 20_000 if row.get("raw_trades") else 50_000
        got = row.get("trades_per_s")
        result[key] = {"target": want, "got": got, "met": got is not None and got >= want}
        stock = next((r for r in out["throughput"] if r.get("parser") == "ccxt.pro"
                      and r.get("raw_trades") == row.get("raw_trades")), None)
        if stock and stock.get("trades_per_s") and got:
            result[key]["lean_over_ccxt_pro"] = round(got / stock["trades_per_s"], 2)
        floor = next((r for r in out["throughput"] if "transport floor" in str(r.get("parser"))), None)
        if floor and floor.get("trades_per_s") and got:
            result[key]["share_of_transport_floor"] = round(got / floor["trades_per_s"], 2)
    for row in out["latency"]:
        key = f"p99_ms_{row['markets']}m_{row['speed']:g}x"
        got = row.get("stream_p99_ms")
        ratio = (round(row["poll_p50_ms"] / row["stream_p50_ms"], 1)
                 if row.get("poll_p50_ms") and row.get("stream_p50_ms") else None)
        result[key] = {"target": 500, "got": got, "met": got is not None and got <= 500,
                       "poll_over_stream_p50": ratio}
    return result


if __name__ == "__main__":
    main()
