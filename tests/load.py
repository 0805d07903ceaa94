"""An open-loop HTTP load client (aiohttp): requests scheduled at a fixed rate whatever the answers, at most
`max_in_flight` outstanding, latency measured from the SCHEDULED send time (so queueing counts: no coordinated
omission). Used by bench/api.py and by the soak (tests/reliability/soak.py), which runs it in a thread."""

from __future__ import annotations

import asyncio
import statistics
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadFigures:
    requests: int = 0
    errors: int = 0
    achieved_rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "errors": self.errors, "achieved_rps": self.achieved_rps,
                "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "max_ms": self.max_ms,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}}


async def open_loop(session, make_url: Callable[[], str], headers: dict[str, str], rate: float, seconds: float,
                    ok: Callable[[int, bytes], bool], *, max_in_flight: int = 64) -> LoadFigures:
    """`rate` requests/s for `seconds` against the URLs `make_url()` gives; `ok(status, body)` says what counts."""
    sem = asyncio.Semaphore(max_in_flight)
    latencies: list[float] = []
    figures = LoadFigures()
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = int(rate * seconds)

    async def one(i: int) -> None:
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        async with sem:
            status, good = 0, False
            try:
                async with session.get(make_url(), headers=headers) as resp:
                    status = resp.status
                    good = ok(status, await resp.read())
            except Exception:  # noqa: BLE001 - a refused or broken request is an error, counted
                good = False
        latencies.append((loop.time() - scheduled) * 1000.0)
        figures.statuses[status] = figures.statuses.get(status, 0) + 1
        figures.errors += not good

    await asyncio.gather(*(one(i) for i in range(n)))
    wall = loop.time() - start
    lat = sorted(latencies)
    figures.requests = n
    if lat:
        figures.achieved_rps = round(n / wall, 1)
        figures.p50_ms = round(statistics.median(lat), 2)
        figures.p99_ms = round(lat[int(0.99 * (len(lat) - 1))], 2)
        figures.max_ms = round(lat[-1], 2)
    return figures


class BackgroundLoad:
    """`open_loop` in a thread of its own (its own event loop): start(), then join() for the figures."""

    def __init__(self, make_url: Callable[[], str], headers: dict[str, str], rate: float, seconds: float,
                 ok: Callable[[int, bytes], bool]) -> None:
        self._args = (make_url, headers, rate, seconds, ok)
        self._result: LoadFigures | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="background-load", daemon=True)

    def _run(self) -> None:
        import aiohttp

        async def main() -> LoadFigures:
            # one connection per request: a reused keep-alive connection the server closed after its idle timeout
            # fails on the client (status 0) although the server did nothing wrong
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64, force_close=True)) as session:
                return await open_loop(session, *self._args)

        try:
            self._result = asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - re-raised in join()
            self._error = exc

    def start(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> LoadFigures:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError("the background load did not finish")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result
