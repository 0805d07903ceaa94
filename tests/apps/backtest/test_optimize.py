"""manage.py optimize on real Celery workers: Optuna trials asked in batches, evaluated on the `backtest` queue,
told back; a study killed mid-way resumes with no trial lost or counted twice; redelivered trials are idempotent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apps.backtest import optimize
from apps.backtest.models import Study, StudyTrial
from apps.market.csvio import read_candle_csv
from apps.market.services import ingest_candles
from tests.celery_workers import _database_url, workers_active

ROOT = Path(__file__).resolve().parents[3]
ETH_15M = ROOT / "sample_data/binance_spot_2023/binance_ETH_USDT-15m.csv"
DATA = ["--exchange", "binance", "--symbol", "ETH/USDT", "--timeframe", "15m"]
SPACE = json.dumps({"fast": [3, 40], "slow": [20, 200]})

pytestmark = [pytest.mark.workers, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stored_eth():
    df = read_candle_csv(ETH_15M, timeframe="15m", time_label="open")
    ingest_candles(exchange="binance", symbol="ETH/USDT", timeframe="15m", df=df, publish=False)
    return df


def optuna_states(name: str) -> dict[str, int]:
    study = optuna.load_study(study_name=name, storage=optimize.storage_url())
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def assert_counted_once(name: str, n: int) -> None:
    states = optuna_states(name)
    assert states.get("COMPLETE", 0) + states.get("FAIL", 0) == n, states
    assert states.get("RUNNING", 0) == 0, states
    rows = list(StudyTrial.objects.filter(study__name=name).values_list("number", "state", "told"))
    assert len(rows) == n and len({r[0] for r in rows}) == n
    assert all(told for _, _, told in rows)
    assert all(state != "pending" for _, state, _ in rows)


def test_given_two_worker_processes_when_optimizing_then_every_trial_is_evaluated_once_and_the_best_is_stored(
        stored_eth, capsys):
    name = f"test-{uuid.uuid4().hex[:8]}"
    with workers_active(concurrency=2):
        call_command("optimize", "--strategy", "sma_cross", "--space", SPACE, "--trials", "24", "--study", name,
                     "--seed", "7", "--batch", "4", "--json", *DATA)
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["done"] + payload["failed"] == 24 and payload["done"] >= 12
    assert_counted_once(name, 24)
    study = Study.objects.get(name=name)
    values = [t.value for t in study.trials.filter(state="done")]
    assert study.best_value == max(values) == payload["best_value"]
    best = study.trials.get(value=study.best_value)
    assert study.best_parameters == best.parameters
    assert best.metrics["bars"] == len(stored_eth)
    failed = study.trials.filter(state="failed")
    assert all("must be < slow" in t.error for t in failed)  # fast >= slow: the strategy refuses, a failed trial


def test_given_a_killed_optimize_command_when_resumed_then_no_trial_is_lost_or_counted_twice(stored_eth):
    name = f"test-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ)
    env.update(DJANGO_SETTINGS_MODULE="tradebot.settings.test", CELERY_TASK_ALWAYS_EAGER="0",
               DATABASE_URL=_database_url(dict(connection.settings_dict), connection.settings_dict["NAME"]))
    args = ["optimize", "--strategy", "sma_cross", "--space", SPACE, "--trials", "16", "--study", name, "--seed",
            "3", "--batch", "4", "--quiet", *DATA]
    with workers_active(concurrency=2):
        proc = subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while StudyTrial.objects.filter(study__name=name, told=True).count() < 4:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the command never told 4 trials"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)  # mid-study: trials asked, some evaluated, not all told
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert StudyTrial.objects.filter(study__name=name).count() < 16
        call_command(*args)
    assert_counted_once(name, 16)


def test_given_a_trial_told_to_optuna_by_a_killed_command_when_resumed_then_it_is_counted_once(stored_eth):
    name = f"test-{uuid.uuid4().hex[:8]}"
    data = {"exchange": "binance", "symbol": "ETH/USDT", "timeframe": "15m"}
    row, ostudy, searched, fixed = optimize.open_study(name=name, strategy="sma_cross", space=json.loads(SPACE),
                                                       metric="sharpe", seed=2, **data)
    with workers_active(concurrency=2):
        optimize.run_study(row=row, ostudy=ostudy, searched=searched, fixed=fixed, n_trials=4, batch=2)
        # killed between telling Optuna and marking the row told
        StudyTrial.objects.filter(study=row, number=StudyTrial.objects.filter(study=row).latest("number").number
                                  ).update(told=False)
        optimize.run_study(row=row, ostudy=ostudy, searched=searched, fixed=fixed, n_trials=6, batch=2)

    assert_counted_once(name, 6)


def test_given_a_trial_whose_worker_died_when_the_study_runs_then_it_is_requeued_and_a_redelivery_changes_nothing(
        stored_eth):
    name = f"test-{uuid.uuid4().hex[:8]}"
    data = {"exchange": "binance", "symbol": "ETH/USDT", "timeframe": "15m"}
    row, ostudy, searched, fixed = optimize.open_study(name=name, strategy="sma_cross", space=json.loads(SPACE),
                                                       metric="sharpe", seed=1, **data)
    lost = ostudy.ask(searched)  # asked by a process that died before storing the row: a RUNNING optuna trial
    with workers_active(concurrency=2):
        optimize.run_study(row=row, ostudy=ostudy, searched=searched, fixed=fixed, n_trials=6, batch=2,
                           requeue_after=1.0)
    assert_counted_once(name, 6)
    trial = StudyTrial.objects.get(study=row, number=lost.number)
    assert trial.parameters == lost.params
    before = (trial.state, trial.value, trial.finished_at)
    again = optimize.evaluate_trial(trial.pk)  # a redelivered task
    assert (again.state, again.value, again.finished_at) == before


def test_given_a_study_name_with_another_configuration_when_optimizing_then_exit_2(stored_eth):
    name = f"test-{uuid.uuid4().hex[:8]}"
    call_command("optimize", "--strategy", "sma_cross", "--space", SPACE, "--trials", "2", "--study", name,
                 "--quiet", *DATA)
    with pytest.raises(CommandError) as info:
        call_command("optimize", "--strategy", "sma_cross", "--space", '{"fast": [3, 10]}', "--trials", "2",
                     "--study", name, *DATA)
    assert info.value.returncode == 2 and "exists with another space" in str(info.value)
    with pytest.raises(CommandError) as info:
        call_command("optimize", "--strategy", "sma_cross", "--space", SPACE, "--trials", "2", "--metric", "nope",
                     *DATA)
    assert info.value.returncode == 2 and "expected one of" in str(info.value)
