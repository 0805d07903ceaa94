"""Backtest API: list/retrieve/create runs and sweeps, 400s naming the field, results endpoint, progress."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from apps.backtest.models import BacktestRun, Sweep
from apps.market.csvio import read_candle_csv
from apps.market.services import ingest_candles


@pytest.fixture
def stored(data_dir):
    df = read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-15m.csv", timeframe="15m",
                         time_label="open")
    ingest_candles(exchange="binance", symbol="BTC/USDT", timeframe="15m", df=df, publish=False)
    return df


@pytest.fixture
def api():
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("trader", password="x" * 12, is_staff=True))
    return client


BASE = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "15m"}


@pytest.mark.django_db(transaction=True)
def test_given_stored_candles_when_posting_a_run_then_it_is_created_run_and_retrievable(stored, api):
    resp = api.post("/api/v1/backtest/runs/", {**BASE, "strategy": "sma_cross", "parameters": {"fast": 10, "slow": 40},
                                            "fee": 0.0005}, format="json")
    assert resp.status_code == 202, resp.content
    run_id = resp.json()["id"]
    assert resp["Location"].endswith(f"/api/v1/backtest/runs/{run_id}/") and resp.json()["url"] == resp["Location"]
    detail = api.get(f"/api/v1/backtest/runs/{run_id}/").json()
    assert detail["status"] == "done" and detail["fee"] == 0.0005
    assert detail["metrics"]["bars"] == len(stored) and len(detail["trades"]) == detail["metrics"]["closed_trades"]
    listed = api.get("/api/v1/backtest/runs/?strategy=sma_cross").json()
    assert listed["count"] == 1 and "trades" not in listed["results"][0]
    report = api.get(f"/api/v1/backtest/runs/{run_id}/report/")
    assert report.status_code == 200 and report["Content-Type"].startswith("text/html")


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field", "text"), [
    ({"strategy": "nope"}, "strategy", "unknown strategy"),
    ({"strategy": "sma_cross", "parameters": {"fast": 90, "slow": 40}}, "parameters", "'fast' must be < slow"),
    ({"strategy": "sma_cross", "parameters": {"bogus": 1}}, "parameters", "bogus"),
    ({"strategy": "sma_cross", "fee": 1.5}, "fee", "fee"),
    ({"strategy": "sma_cross", "timeframe": "2m"}, "timeframe", "2m"),
])
def test_given_bad_input_when_posting_a_run_then_400_names_the_field(api, body, field, text):
    resp = api.post("/api/v1/backtest/runs/", {**BASE, **body}, format="json")
    assert resp.status_code == 400
    assert resp.json()["field"].startswith(field) and text in resp.json()["detail"]
    assert BacktestRun.objects.count() == 0


@pytest.mark.django_db
def test_given_anonymous_when_posting_a_run_then_refused():
    resp = APIClient().post("/api/v1/backtest/runs/", {**BASE, "strategy": "sma_cross"}, format="json")
    assert resp.status_code in (401, 403)


@pytest.mark.django_db(transaction=True)
def test_given_a_grid_when_posting_a_sweep_then_progress_ranking_and_results_are_served(stored, api):
    resp = api.post("/api/v1/backtest/sweeps/", {**BASE, "strategy": "sma_cross", "grid": {"fast": [5, 10, 60],
                                              "slow": [40, 80]}, "top_k": 2, "chunk_size": 2}, format="json")
    assert resp.status_code == 202, resp.content
    sweep = resp.json()
    assert sweep["status"] == "done" and sweep["total"] == 6 and sweep["completed"] == 6
    assert sweep["progress"] == 1.0 and sweep["failed"] == 1 and len(sweep["ranking"]) == 2
    results = api.get(f"/api/v1/backtest/sweeps/{sweep['id']}/results/").json()
    assert results["count"] == 6
    assert results["results"][0]["index"] == sweep["ranking"][0]["index"]
    assert "'fast' must be < slow" in results["results"][-1]["error"]
    failed = api.get(f"/api/v1/backtest/sweeps/{sweep['id']}/results/?failed=true").json()
    assert [r["parameters"] for r in failed["results"]] == [{"fast": 60, "slow": 40}]


@pytest.mark.django_db
def test_given_neither_grid_nor_random_when_posting_a_sweep_then_400(api):
    resp = api.post("/api/v1/backtest/sweeps/", {**BASE, "strategy": "sma_cross"}, format="json")
    assert resp.status_code == 400 and resp.json()["field"] == "grid"
    resp = api.post("/api/v1/backtest/sweeps/", {**BASE, "strategy": "sma_cross", "grid": {"fastest": [1]}},
                    format="json")
    assert resp.status_code == 400 and resp.json()["field"] == "grid.fastest" and "fastest" in resp.json()["detail"]
    assert Sweep.objects.count() == 0


@pytest.mark.django_db
def test_given_the_schema_when_generated_then_backtest_endpoints_are_documented(api):
    resp = api.get("/api/v1/schema/")
    assert resp.status_code == 200
    text = resp.content.decode()
    assert "/api/v1/backtest/sweeps/{id}/results/" in text and "/api/v1/backtest/runs/" in text


@pytest.mark.django_db(transaction=True)
def test_given_a_finished_study_when_listed_then_best_and_trials_best_first_and_bot_configs_from_it(stored, api):
    from apps.backtest import optimize
    from apps.bots.config import BotConfig

    name = f"api-study-{uuid.uuid4().hex[:8]}"
    row, ostudy, searched, fixed = optimize.open_study(name=name, strategy="sma_cross",
                                                       space={"fast": [3, 15], "slow": [30, 90]}, metric="sharpe",
                                                       seed=2, **BASE)
    optimize.run_study(row=row, ostudy=ostudy, searched=searched, fixed=fixed, n_trials=5, batch=1)  # eager
    listing = api.get("/api/v1/backtest/studies/").json()
    items = listing["results"] if isinstance(listing, dict) else listing
    mine = next(i for i in items if i["name"] == name)
    assert mine["status"] == "done" and mine["best_parameters"] is not None
    trials = api.get(f"/api/v1/backtest/studies/{mine['id']}/trials/").json()
    trials = trials["results"] if isinstance(trials, dict) else trials
    assert len(trials) == 5
    assert trials[0]["value"] == mine["best_value"] and trials[0]["parameters"] == mine["best_parameters"]
    values = [t["value"] for t in trials if t["value"] is not None]
    assert values == sorted(values, reverse=True)
    configs = optimize.bot_configs(strategy="sma_cross", parameter_sets=[t["parameters"] for t in trials[:2]],
                                   name_prefix="study", rules={"fee": 0.0005, "stop_loss": 0.05}, **BASE)
    assert [BotConfig(**c).parameters for c in configs] == [t["parameters"] for t in trials[:2]]
    assert configs[0]["fee_rate"] == 0.0005 and configs[0]["name"] == "study-1"


# --- walk-forwards -------------------------------------------------------------------------------------------------

WF = {**BASE, "strategy": "sma_cross", "grid": {"fast": [5, 10], "slow": [40, 80]}, "train": "3d", "test": "1d"}


@pytest.mark.django_db(transaction=True)
def test_given_stored_candles_when_posting_a_walkforward_then_202_and_per_window_in_and_out_of_sample(stored, api):
    from apps.backtest import services
    from apps.market.selectors import candle_frame

    resp = api.post("/api/v1/backtest/walkforwards/", {**WF, "fee": 0.0005}, format="json")
    assert resp.status_code == 202, resp.content
    study_id = resp.json()["id"]
    assert resp["Location"].endswith(f"/api/v1/backtest/walkforwards/{study_id}/") and resp.json()["url"] == \
        resp["Location"]
    detail = api.get(resp["Location"]).json()
    assert detail["status"] == "done", detail["error"]
    assert (detail["train_size"], detail["test_size"], detail["fee"]) == (288, 96, 0.0005)
    assert len(detail["windows"]) == (len(stored) - 288 - 96) // 96 + 1
    ref = services.run_walkforward_in_process("sma_cross", WF["grid"], candle_frame(**BASE), timeframe="15m",
                                              rules_kwargs={"fee": 0.0005}, train="3d", test="1d")
    assert [(w["parameters"], w["in_sample"], w["out_of_sample"]) for w in detail["windows"]] == [
        (w["parameters"], w["in_sample"], w["out_of_sample"]) for w in ref["windows"]]
    assert all(w["out_of_sample"]["bars"] == 96 for w in detail["windows"])
    assert detail["stitched_metrics"] == ref["stitched_metrics"] and detail["stitched_equity"]["equity"]
    listed = api.get("/api/v1/backtest/walkforwards/?strategy=sma_cross&status=done").json()
    assert listed["count"] == 1 and "stitched_equity" not in listed["results"][0]
    assert listed["results"][0]["windows"] == detail["windows"]
    report = api.get(f"/api/v1/backtest/walkforwards/{study_id}/report/")
    assert report.status_code == 200 and b"out-of-sample" in report.content.lower()


@pytest.mark.django_db
def test_given_a_walkforward_post_then_it_is_stored_pending_and_computed_only_by_the_task_on_commit(
        stored, api, django_capture_on_commit_callbacks):
    from apps.backtest.models import WalkForward

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        resp = api.post("/api/v1/backtest/walkforwards/", WF, format="json")
    assert resp.status_code == 202, resp.content
    assert resp.json()["status"] == "pending" and resp.json()["windows"] == [] and len(callbacks) == 1
    for callback in callbacks:  # the commit: the task is sent (eager in the tests) and a worker computes it
        callback()
    study = WalkForward.objects.get(pk=resp.json()["id"])
    assert study.status == "done" and len(study.windows) == (len(stored) - 288 - 96) // 96 + 1


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field", "text"), [
    ({"grid": {"fast": list(range(1, 41)), "slow": list(range(41, 81))}}, "grid", "at most 1000"),
    ({"train": 10, "test": 10}, "step", "286 windows: at most 200"),
    ({"grid": {"fast": list(range(1, 11)), "slow": list(range(41, 61))}, "train": 100, "test": 20}, "grid",
     "at most 20000 backtests"),
    ({"train": "abc"}, "train", "expected a candle count or a duration"),
    ({"train": 0}, "train", "must be positive"),
    ({"test": "7m"}, "test", "not a whole number of 15m candles"),
    ({"step": 10**12}, "step", "at most 10000000"),
    ({"metric": "bogus"}, "metric", "unknown metric"),
    ({"grid": {"fastest": [1]}}, "grid.fastest", "fastest"),
    ({"strategy": "nope"}, "strategy", "unknown strategy"),
    ({"start": 10, "end": 5}, "end", "must not be before start"),
    ({"fee": 1.5}, "fee", "fee"),
])
def test_given_a_walkforward_beyond_its_bounds_or_bad_when_posted_then_400_names_the_field(
        stored, api, body, field, text):
    from apps.backtest.models import WalkForward

    resp = api.post("/api/v1/backtest/walkforwards/", {**WF, **body}, format="json")
    assert resp.status_code == 400, resp.content
    assert resp.json()["field"] == field and text in resp.json()["detail"], resp.json()
    assert WalkForward.objects.count() == 0


@pytest.mark.django_db
def test_given_a_non_staff_user_when_posting_a_walkforward_then_403_and_anonymous_401():
    from apps.backtest.models import WalkForward

    user = APIClient()
    user.force_authenticate(get_user_model().objects.create_user("reader", password="x" * 12))
    assert user.post("/api/v1/backtest/walkforwards/", WF, format="json").status_code == 403
    assert user.get("/api/v1/backtest/walkforwards/").status_code == 200
    assert APIClient().post("/api/v1/backtest/walkforwards/", WF, format="json").status_code == 401
    assert WalkForward.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_given_detail_when_posting_a_run_and_a_sweep_then_it_is_stored_reported_and_a_bad_one_names_the_field(
        stored, api):
    from apps.backtest.models import SweepResult

    body = {**BASE, "strategy": "sma_cross", "stop_loss": 0.003, "take_profit": 0.003, "detail": "1m"}
    run = api.post("/api/v1/backtest/runs/", {**body, "parameters": {"fast": 5, "slow": 20}}, format="json")
    assert run.status_code == 202, run.content
    got = api.get(f"/api/v1/backtest/runs/{run.json()['id']}/").json()
    assert got["status"] == "done" and got["detail"] == "1m"
    assert got["detail_report"]["source"] == "1m"  # no 1m stored here: every ambiguous exit is missing, warned
    assert got["detail_report"]["missing"] == got["detail_report"]["ambiguous_exits"]
    named = [w for w in got["warnings"] if w.startswith("detail 1m:") and "more candles" not in w]
    assert named and all("no detail data" in w for w in named)
    sweep = api.post("/api/v1/backtest/sweeps/", {**body, "grid": {"fast": [5, 8], "slow": [20]}}, format="json")
    assert sweep.status_code == 202, sweep.content
    sid = sweep.json()["id"]
    assert api.get(f"/api/v1/backtest/sweeps/{sid}/").json()["detail"] == "1m"
    results = api.get(f"/api/v1/backtest/sweeps/{sid}/results/").json()
    results = results["results"] if isinstance(results, dict) else results
    assert len(results) == 2 and all(r["detail_report"]["source"] == "1m" for r in results)
    assert SweepResult.objects.filter(sweep_id=sid, detail_report__isnull=False).count() == 2
    bad = api.post("/api/v1/backtest/sweeps/", {**body, "grid": {"fast": [5]}, "detail": "5m"}, format="json")
    assert bad.status_code == 400 and "detail" in bad.content.decode()
