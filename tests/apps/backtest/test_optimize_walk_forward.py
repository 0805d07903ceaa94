"""optimize --walk-forward on real Celery workers: one Optuna search per rolling train window (a child study,
resumable), each window's best set evaluated out-of-sample on the next test window by the walk-forward engine; the
report equals the engine's walk-forward over the very sets the searches tried; the latest window's best becomes
bots."""

from __future__ import annotations

import json
import uuid
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.backtest import optimize, services
from apps.backtest.engine import walkforward as wf
from apps.backtest.models import Study, StudyTrial
from apps.bots.models import Bot
from apps.bots.trading.candles import CandleArrays
from apps.market.csvio import read_candle_csv
from apps.market.services import ingest_candles
from tests.celery_workers import workers_active

ROOT = Path(__file__).resolve().parents[3]
BTC_1H = ROOT / "sample_data/binance_spot_2023/binance_BTC_USDT-1h.csv"
DATA = ["--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h"]
SPACE = json.dumps({"fast": [3, 15], "slow": [20, 60]})
WF = ["--walk-forward", "--train", "300", "--test", "100"]

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stored_btc():
    """Real Binance BTC/USDT 1h candles (719: four 300+100 windows stepping by 100)."""
    df = read_candle_csv(BTC_1H, timeframe="1h", time_label="open")
    ingest_candles(exchange="binance", symbol="BTC/USDT", timeframe="1h", df=df, publish=False)
    return df


def optimize_json(*args: str) -> dict:
    out = StringIO()
    call_command("optimize", *args, stdout=out)
    return json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.mark.workers
def test_given_workers_when_optimizing_walk_forward_then_each_window_is_searched_and_evaluated_out_of_sample(
        stored_btc):
    name = f"wf-{uuid.uuid4().hex[:8]}"
    args = ["--strategy", "sma_cross", "--space", SPACE, "--trials", "6", "--study", name, "--sampler", "random",
            "--seed", "5", "--batch", "3", "--json", *WF, *DATA]
    with workers_active(concurrency=2):
        report = optimize_json(*args)
        again = optimize_json(*args)  # same name: every window's search is already done, nothing re-evaluated

    parent = Study.objects.get(name=name)
    windows = report["windows"]
    assert len(windows) == 4 and report["train"] == 300 and report["test"] == 100
    children = {c.name: c for c in parent.window_studies.all()}
    assert sorted(children) == [f"{name}/w{i}" for i in range(4)]
    tried = []
    for w in windows:
        child = children[w["study"]]
        assert (child.start, child.end) == (w["train_start"], w["train_end"])  # its data: the train window only
        assert w["trials"] == 6 and child.trials.filter(told=True).count() == 6
        best = optimize.ranking(child, 1)[0]
        assert w["parameters"] == best["parameters"] and w["in_sample"] == best["metrics"]
        assert w["in_sample"]["bars"] == 300 and w["out_of_sample"]["bars"] == 100
        tried.append([t.parameters for t in child.trials.order_by("number")])
    # the same seed samples the same sets in every window: the report must be the engine's walk-forward over them
    assert all(t == tried[0] for t in tried)
    ref = wf.walk_forward(CandleArrays.from_frame(stored_btc), services.resolve_strategy("sma_cross"), tried[0],
                          services.rules_for(parent), "1h", train=300, test=100, metric="sharpe")
    for mine, theirs in zip(windows, ref["windows"], strict=True):
        for key in ("train_start", "train_end", "test_start", "test_end", "parameters", "in_sample",
                    "out_of_sample"):
            assert mine[key] == theirs[key], (mine["index"], key)
    assert report["stitched_metrics"] == ref["stitched_metrics"]
    assert again["windows"] == windows and StudyTrial.objects.filter(study__parent=parent).count() == 24
    assert parent.best_parameters == windows[-1]["parameters"] == report["best_parameters"]

    text = StringIO()
    call_command("optimize", *[a for a in args if a != "--json"], "--quiet", stdout=text)  # done: no worker needed
    lines = text.getvalue().splitlines()
    assert lines[0].startswith(f"walk-forward study {name}") and "4 windows" in lines[0]
    assert sum(line.startswith("  window ") for line in lines) == 4 and "  stitched out-of-sample:" in lines
    assert " train 2023-" in lines[1] and f"(6 trials, {name}/w0)" in lines[1]

    call_command("bots_from_study", str(parent.pk), "--top", "1", stdout=StringIO())
    mine = Bot.objects.filter(name__startswith=f"study{parent.pk}-")
    assert [b.parameters for b in mine] == [windows[-1]["parameters"]]


def test_given_bad_walk_forward_arguments_when_optimizing_then_one_line_and_exit_2(stored_btc):
    base = ["--strategy", "sma_cross", "--space", SPACE, "--trials", "2", *DATA]
    cases = [
        (["--walk-forward", "--test", "100"], "--walk-forward needs --train and --test"),
        (["--train", "300", "--test", "100"], "need --walk-forward"),
        (["--walk-forward", "--train", "5x", "--test", "100"], "--train '5x'"),
        (["--walk-forward", "--train", "700", "--test", "100"], "exceed the 719 candles"),
        (["--folds", "0"], "--folds must be >= 1"),
    ]
    for extra, message in cases:
        with pytest.raises(CommandError) as info:
            call_command("optimize", *base, "--study", f"bad-{uuid.uuid4().hex[:8]}", "--quiet", *extra)
        assert info.value.returncode == 2 and message in str(info.value), (extra, str(info.value))
    assert set(Study.objects.values_list("status", flat=True)) <= {"pending", "failed"}  # none left "running"


def test_given_a_walk_forward_study_when_continued_with_another_plan_then_exit_2(stored_btc):
    name = f"wf-{uuid.uuid4().hex[:8]}"
    row = optimize.open_walk_forward(name=name, strategy="sma_cross", space=json.loads(SPACE), metric="sharpe",
                                     train=300, test=100, exchange="binance", symbol="BTC/USDT", timeframe="1h")
    assert row.walk_forward == {"train": 300, "test": 100, "step": None}
    with pytest.raises(CommandError) as info:
        call_command("optimize", "--strategy", "sma_cross", "--space", SPACE, "--trials", "2", "--study", name,
                     "--walk-forward", "--train", "200", "--test", "100", *DATA)
    assert info.value.returncode == 2 and "another walk-forward plan" in str(info.value)
