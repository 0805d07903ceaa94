"""A study's best trials become paper bots on its market in one step (command and admin action), through the bots
services: one validator, the study's fill rules, bad input one line with exit 2."""

from __future__ import annotations

import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.backtest import optimize
from apps.backtest.models import Study, StudyTrial
from apps.bots.models import Bot
from tests.factories import store_sample_candles

pytestmark = pytest.mark.django_db(transaction=True)
MARKET = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"}


def study_with_trials(**extra) -> Study:
    study = Study.objects.create(name=f"s-{uuid.uuid4().hex[:8]}", strategy="sma_cross", metric="sharpe",
                                 direction="maximize", status="done", fee=0.002, stop_loss=0.05, **MARKET, **extra)
    for n, (fast, slow, value, state) in enumerate([(5, 20, 0.5, "done"), (10, 50, 1.5, "done"),
                                                    (8, 30, 1.0, "done"), (3, 12, None, "failed"),
                                                    (4, 40, None, "pending")]):
        StudyTrial.objects.create(study=study, number=n, parameters={"fast": fast, "slow": slow}, value=value,
                                  state=state, error="boom" if state == "failed" else "", told=state != "pending")
    return study


def test_given_a_finished_study_when_bots_are_made_from_its_top_two_then_they_carry_its_best_trials_and_rules():
    study = study_with_trials()
    out = StringIO()

    call_command("bots_from_study", str(study.pk), "--top", "2", stdout=out)

    bots = list(Bot.objects.order_by("name"))
    assert [b.name for b in bots] == [f"study{study.pk}-1-fast10-slow50", f"study{study.pk}-2-fast8-slow30"]
    assert bots[0].parameters == {"fast": 10, "slow": 50} and bots[0].fee_rate == 0.002
    assert bots[0].stop_loss == 0.05 and bots[0].status == "stopped" and bots[0].config_file == f"study:{study.pk}"
    assert out.getvalue().count("\n") == 2
    call_command("bots_from_study", str(study.pk), "--top", "2", stdout=StringIO())  # again: updated, not doubled
    assert Bot.objects.count() == 2


def test_given_a_study_run_by_optimize_when_bots_are_made_and_started_then_they_run_its_best_sets():
    store_sample_candles(timeframe="1h", nrows=400)
    row, ostudy, searched, fixed = optimize.open_study(
        name=f"bots-{uuid.uuid4().hex[:8]}", strategy="sma_cross", space={"fast": [3, 15], "slow": [30, 90]},
        metric="sharpe", seed=3, **MARKET)
    study = optimize.run_study(row=row, ostudy=ostudy, searched=searched, fixed=fixed, n_trials=6, batch=1)

    call_command("bots_from_study", str(study.pk), "--top", "3", "--start", stdout=StringIO())

    best = [r["parameters"] for r in optimize.ranking(study, None) if r["value"] is not None][:3]
    bots = sorted(Bot.objects.all(), key=lambda b: int(b.name.split("-")[1]))
    assert [b.parameters for b in bots] == best and bots[0].parameters == study.best_parameters
    assert {b.status for b in bots} == {"running"}


@pytest.mark.parametrize(("make", "args", "message"), [
    (lambda: None, ["999999", "--top", "2"], "no study #999999"),
    (lambda: study_with_trials(), ["{id}", "--top", "0"], "--top must be >= 1"),
    (lambda: Study.objects.create(name="file-study", strategy="sma_cross", timeframe="1h",
                                  data_file="/tmp/x.csv", time_label="open"), ["{id}", "--top", "1"], "on a file"),
    (lambda: Study.objects.create(name="empty-study", strategy="sma_cross", **MARKET), ["{id}", "--top", "1"],
     "no finished trial"),
])
def test_given_bad_input_when_making_bots_from_a_study_then_one_line_and_exit_2(make, args, message):
    study = make()
    args = [a.format(id=study.pk if study else 0) for a in args]
    with pytest.raises(CommandError) as info:
        call_command("bots_from_study", *args)
    assert info.value.returncode == 2 and message in str(info.value) and "\n" not in str(info.value)
    assert not Bot.objects.exists()


def test_given_a_study_when_the_admin_action_runs_then_its_five_best_trials_become_stopped_bots(admin_client):
    study = study_with_trials()
    empty = Study.objects.create(name="empty-admin", strategy="sma_cross", **MARKET)

    resp = admin_client.post("/admin/backtest/study/", {"action": "make_bots_top5",
                                                         "_selected_action": [str(study.pk), str(empty.pk)]},
                             follow=True)

    assert resp.status_code == 200
    names = sorted(Bot.objects.values_list("name", flat=True))
    assert names == sorted([f"study{study.pk}-1-fast10-slow50", f"study{study.pk}-2-fast8-slow30",
                            f"study{study.pk}-3-fast5-slow20"])
    text = resp.content.decode()
    assert "3 bot(s)" in text and "no finished trial" in text
