"""Schemathesis (`--checks all`, bounded) against a live gunicorn on the test database, authenticated as staff and
anonymous: no 5xx, no schema violation, no undocumented status, content type or header."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import requests
from django.conf import settings
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from apps.backtest import services as backtest_services
from apps.bots.models import Bot
from apps.market.models import Candle, Market
from apps.market.services import ingest_candles
from tests.servers import ROOT, gunicorn_server

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
SEED = "20261201"


def _seed_data() -> dict[str, int]:
    df = pd.read_csv(ROOT / "sample_data" / "binance_spot_2023" / "binance_BTC_USDT-1h.csv", nrows=300)
    df["timestamp"] = df["timestamp"] + 3_600_000  # open -> close label
    ingest_candles(exchange="binance", symbol="BTC/USDT", timeframe="1h", df=df, publish=False)
    market = Market.objects.get(exchange="binance", symbol="BTC/USDT", timeframe="1h")
    bot = Bot.objects.create(name="fuzz-bot", strategy="sma_cross", parameters={"fast": 5, "slow": 20},
                             exchange="binance", symbol="BTC/USDT", timeframe="1h")
    run = backtest_services.create_run(strategy="sma_cross", parameters={"fast": 5, "slow": 20}, enqueue=False,
                                       exchange="binance", symbol="BTC/USDT", timeframe="1h")
    backtest_services.execute_run(run.pk)
    sweep = backtest_services.create_sweep(strategy="sma_cross", grid={"fast": [5, 10], "slow": [20]}, enqueue=False,
                                           exchange="binance", symbol="BTC/USDT", timeframe="1h")
    study = backtest_services.create_and_run_walkforward(strategy="sma_cross", grid={"fast": [5, 10], "slow": [20]},
                                                         train=100, test=50, exchange="binance", symbol="BTC/USDT",
                                                         timeframe="1h")
    assert Candle.objects.count() == 300
    return {"bot": bot.pk, "market": market.pk, "run": run.pk, "sweep": sweep.pk, "walkforward": study.pk}


def _config(tmp_path: Path, ids: dict[str, int]) -> Path:
    """The repository's schemathesis.toml plus the ids of the seeded rows for the detail operations."""
    base = (ROOT / "schemathesis.toml").read_text()
    blocks = [base]
    for regex, key in ((r"^/api/v1/bots/\{id\}", "bot"), (r"^/api/v1/market/markets/\{id\}", "market"),
                       (r"^/api/v1/backtest/runs/\{id\}", "run"), (r"^/api/v1/backtest/sweeps/\{id\}", "sweep"),
                       (r"^/api/v1/backtest/walkforwards/\{id\}", "walkforward")):
        blocks.append(f"[[operations]]\ninclude-path-regex = '{regex}'\nparameters = {{ \"path.id\" = {ids[key]} }}\n")
    path = tmp_path / "schemathesis.toml"
    path.write_text("\n".join(blocks))
    return path


def _run(args: list[str], tmp_path: Path, phases: str) -> subprocess.CompletedProcess:
    out = subprocess.run([SCHEMATHESIS, "run", *args, "--checks", "all", "--seed", SEED, "--no-shrink",
                          # one worker: parallel workers are threads, and CPython 3.11's ast.parse (hypothesis
                          # reflects on lambdas) is not thread-safe ("AST constructor recursion depth mismatch")
                          "--workers", "1", "--phases", phases, "--request-timeout", "30"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    return out


@pytest.mark.django_db(transaction=True)
def test_given_a_live_server_when_schemathesis_fuzzes_every_operation_then_no_failure(tmp_path):
    ids = _seed_data()
    staff = User.objects.create_user("fuzz-staff", password="fuzz-pass-123", is_staff=True)
    token = Token.objects.create(user=staff).key
    db = settings.DATABASES["default"]
    env = {
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DJANGO_DEBUG": "0",  # as deployed: JSON errors, never a debug page
        # the web process only enqueues; keep its messages in memory so no worker of the suite picks them up
        "CELERY_TASK_ALWAYS_EAGER": "0", "CELERY_BROKER_URL": "memory://", "CELERY_RESULT_BACKEND": "cache+memory://",
        "TRADEBOT_THROTTLE_USER": "1000000/minute", "TRADEBOT_THROTTLE_ANON": "1000000/minute",
        "TRADEBOT_THROTTLE_LOGIN": "1000000/minute",
    }
    _config(tmp_path, ids)  # found by schemathesis in its working directory
    with gunicorn_server(env=env, workers=3, threads=2) as url:
        schema = requests.get(f"{url}/api/v1/schema/?format=json", headers={"Authorization": f"Token {token}"},
                              timeout=30)
        assert schema.status_code == 200
        schema_file = tmp_path / "openapi.json"
        schema_file.write_text(json.dumps(schema.json()))

        staff_run = _run([str(schema_file), "--url", url, "--max-examples", "4",
                          "-H", f"Authorization: Token {token}"], tmp_path, "examples,coverage,fuzzing")
        anon_run = _run([str(schema_file), "--url", url, "--max-examples", "2"],
                        tmp_path, "examples,fuzzing")
    artifacts = ROOT / "var" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "schemathesis-staff.txt").write_text(staff_run.stdout + staff_run.stderr)
    (artifacts / "schemathesis-anonymous.txt").write_text(anon_run.stdout + anon_run.stderr)
    assert staff_run.returncode == 0, staff_run.stdout[-6000:] + staff_run.stderr[-2000:]
    assert anon_run.returncode == 0, anon_run.stdout[-6000:] + anon_run.stderr[-2000:]
    for run in (staff_run, anon_run):
        assert "API Operations:" in run.stdout and "No failures" in run.stdout or " passed" in run.stdout
