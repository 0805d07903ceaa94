"""`make demo` end to end: the developer profile on the embedded default (SQLite, eager Celery, in-process
notifications); the command lives at project level (tradebot/management/commands/demo.py)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]


def test_given_a_fresh_data_dir_when_the_demo_runs_then_every_step_reports_success(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
                        "CELERY_TASK_ALWAYS_EAGER", "NOTIFY_BACKEND"}}
    env.update(DJANGO_SETTINGS_MODULE="tradebot.settings.local", TRADEBOT_DATA_DIR=str(tmp_path))
    for args in (["migrate", "--noinput", "-v", "0"], ["demo"]):
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout

    assert "database: sqlite3" in out and "celery eager: True" in out and "notifications: inprocess" in out
    assert "binance BTC/USDT 1m: received 66087, stored 66087 (66087 new" in out
    assert "gap: 80 candles missing" in out
    assert "equal to Binance's own 1h candles on 719/719 overlapping hours" in out
    assert "run #1: done" in out and "sweep #1: done, 9/9 parameter sets, 0 failed" in out
    assert "300 market:BTC/USDT messages delivered in-process" in out
    assert "fills before its start: 0" in out
    assert "bot fills identical to the backtest's over the period it traded: yes" in out
    report = tmp_path / "demo" / "backtest_sma_cross_btc_1h.html"
    html = report.read_text()
    assert report.stat().st_size > 1_000_000  # plotly.js is embedded
    assert re.search(r"<script[^>]*\ssrc=", html) is None and "Plotly" in html  # offline: nothing fetched
    assert '"name":"equity"' in html and '"name":"drawdown %"' in html  # all three panels have data
    assert (tmp_path / "tradebot.sqlite3").exists()
    # The demo cleans up after itself: a collection round right after it has nothing failing to do.
    after = subprocess.run([sys.executable, "manage.py", "collect"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert after.returncode == 0, after.stdout[-2000:] + after.stderr[-2000:]
    assert "unknown ccxt exchange id" not in after.stdout + after.stderr
