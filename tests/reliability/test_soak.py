"""Bounded soak in `make test`; `make soak` runs the full one (SOAK_BOTS=10000 SOAK_CANDLES=60 SOAK_WORKERS=...)."""

from __future__ import annotations

import os

import pytest

from tests.reliability.soak import run_soak

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers]


def test_given_bots_ticking_while_workers_are_killed_and_redis_restarts_then_every_decision_is_made_once(figures):
    bots = int(os.environ.get("SOAK_BOTS", "30"))
    candles = int(os.environ.get("SOAK_CANDLES", "8"))
    workers = int(os.environ.get("SOAK_WORKERS", "2"))
    kill_every = int(os.environ.get("SOAK_KILL_EVERY", "4"))
    shard_size = int(os.environ.get("SOAK_SHARD_SIZE", "10"))  # several shards even in the bounded run
    api_rps = float(os.environ.get("SOAK_API_RPS", "20"))
    api_seconds = float(os.environ.get("SOAK_API_SECONDS", "10"))
    soak = run_soak(bots=bots, candles=candles, workers=workers, kill_every=kill_every, redis_restart_at=candles // 2,
                    shard_size=shard_size, api_rps=api_rps, api_seconds=api_seconds)
    figures.fault = (f"{bots} bots in shards of {shard_size} x {candles} candles, a worker SIGKILLed every "
                     f"{kill_every} candles, our Redis restarted once")
    figures.faults_injected = soak.workers_killed + soak.redis_restarts
    figures.decisions = soak.decisions
    figures.lost = soak.lost
    figures.doubled = soak.doubled
    figures.extra = soak.to_dict()
    assert soak.workers_killed >= 1 and soak.redis_restarts == 1
    assert soak.bots_with_errors == 0
    figures.check(f"{soak.decisions} decisions of {soak.expected_decisions} expected in {soak.wall_seconds}s, peak "
                  f"worker memory {soak.peak_worker_rss_mb} MB; {soak.supervisor_restarts} bots restarted by the "
                  "monitor after a tick was lost with the broker; API under the soak: "
                  f"{soak.api['requests']} requests at {api_rps:g}/s, p50 {soak.api['p50_ms']} ms, "
                  f"p99 {soak.api['p99_ms']} ms, {soak.api['errors']} errors")
    figures.assert_nothing_lost_or_doubled()
    api = soak.api
    assert api["requests"] == int(api_rps * api_seconds) and api["errors"] == 0, api  # the API kept answering
