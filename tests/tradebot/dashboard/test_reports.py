"""Dashboard report pages: the sweep and walk-forward pages serve apps.backtest.report's fragments (one
implementation with the `--report` files), behind the login."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.backtest import services
from apps.backtest.report import sweep_report, walkforward_report
from apps.market.csvio import read_candle_csv
from apps.market.services import ingest_candles

BASE = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"}


@pytest.fixture
def viewer(data_dir):
    df = read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1h.csv", timeframe="1h",
                         time_label="open")
    ingest_candles(df=df, publish=False, **BASE)
    client = Client()
    client.force_login(User.objects.create_user("report-viewer", password="x" * 12))
    return client


def _without_generated(html: str) -> str:
    return re.sub(r"Generated [^.]*\.", "", html)


@pytest.mark.django_db
def test_given_a_done_sweep_when_its_dashboard_page_opens_then_it_is_the_sweep_report_fragment(viewer):
    sweep = services.create_sweep(strategy="sma_cross", grid={"fast": [5, 10, 15], "slow": [20, 30]}, enqueue=False,
                                  **BASE)
    sets = services.sweep_param_sets(sweep)
    services.execute_sweep_chunk(sweep.pk, 0, [[i, s] for i, s in enumerate(sets)])
    sweep = services.finish_sweep(sweep.pk)
    page = viewer.get(f"/dashboard/sweeps/{sweep.pk}/").content.decode()
    fragment = sweep_report(sweep, full_html=False)
    assert _without_generated(fragment) in _without_generated(page)
    assert 'id="heat"' in page and 'id="ranking"' in page and page.count("<tr><td>") == 6
    assert "cdn" not in page.lower() and "<!DOCTYPE html>" not in fragment
    assert Client().get(f"/dashboard/sweeps/{sweep.pk}/").status_code == 302  # login required


@pytest.mark.django_db
def test_given_a_walkforward_when_its_dashboard_page_opens_then_pending_says_so_and_done_shows_the_report(viewer):
    study = services.create_walkforward(strategy="sma_cross", grid={"fast": [5, 10], "slow": [20]}, train=300,
                                        test=100, enqueue=False, **BASE)
    assert "reload to update" in viewer.get(f"/dashboard/walkforwards/{study.pk}/").content.decode()
    study = services.execute_walkforward(study.pk)
    page = viewer.get(f"/dashboard/walkforwards/{study.pk}/").content.decode()
    assert _without_generated(walkforward_report(study, full_html=False)) in _without_generated(page)
    assert "out-of-sample" in page.lower()
