"""The market admin validates with the market service's validator and saves through it."""

from __future__ import annotations

import pytest

from apps.market.models import Market

pytestmark = pytest.mark.django_db

FORM = {"exchange": "binance", "symbol": "ETH/USDT", "timeframe": "5m", "provider": "ccxt", "watched": "on",
        # empty inline formsets (coverage, gaps)
        "covered_ranges-TOTAL_FORMS": "0", "covered_ranges-INITIAL_FORMS": "0",
        "gaps-TOTAL_FORMS": "0", "gaps-INITIAL_FORMS": "0"}


@pytest.mark.parametrize(("change", "field"), [({"provider": "nonexistent"}, "provider"),
                                              ({"exchange": "nosuchexchange"}, "exchange"),
                                              ({"symbol": "ETHUSDT"}, "symbol")])
def test_given_a_market_no_provider_can_serve_when_the_admin_form_is_posted_then_it_is_not_saved(admin_client,
                                                                                                 change, field):
    resp = admin_client.post("/admin/market/market/add/", {**FORM, **change})

    assert resp.status_code == 200
    assert field in resp.context["adminform"].form.errors
    assert not Market.objects.exists()


def test_given_a_valid_market_when_added_and_unwatched_by_action_then_the_services_did_it(admin_client):
    resp = admin_client.post("/admin/market/market/add/", FORM)
    assert resp.status_code == 302, resp.context["adminform"].form.errors if resp.context else resp
    market = Market.objects.get(symbol="ETH/USDT")
    assert market.watched and market.provider == "ccxt"

    admin_client.post("/admin/market/market/", {"action": "unwatch_markets", "_selected_action": [market.pk]})

    market.refresh_from_db()
    assert not market.watched
