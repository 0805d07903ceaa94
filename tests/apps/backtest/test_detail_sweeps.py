"""sweep --detail 1m|trades: every parameter set of a sweep on real workers gets exactly the metrics and detail
report of `backtest --detail` for that set (one detail rule), missing detail is a warning naming the candle, and a
detail sweep over a CSV file is refused (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.backtest import services
from apps.backtest.models import Status, SweepResult
from apps.market.models import Candle
from tests.apps.backtest.test_workers import wait_for
from tests.celery_workers import real_celery_worker  # noqa: F401 - the fixture
from tests.factories import store_btc_1h_with_1m

ROOT = Path(__file__).resolve().parents[3]
BTC = ROOT / "sample_data/binance_spot_2023"
MARKET = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"}
RULES = {"stop_loss": 0.003, "take_profit": 0.003}
GRID = {"fast": [5, 8], "slow": [20, 30]}


@pytest.fixture
def stored_btc():
    """Real Binance BTC/USDT 1h candles and the 1m candles of the same weeks (the detail)."""
    return store_btc_1h_with_1m()


def backtest_with_detail(parameters: dict) -> dict:
    run = services.create_run(strategy="sma_cross", parameters=parameters, enqueue=False, detail="1m", **MARKET,
                              **RULES)
    run = services.execute_run(run.pk)
    assert run.status == Status.DONE, run.error
    return {"metrics": run.metrics, "detail": run.detail_report, "warnings": run.warnings}


@pytest.mark.workers
@pytest.mark.django_db(transaction=True)
def test_given_stored_1m_when_a_sweep_runs_with_detail_on_workers_then_each_set_equals_its_backtest_with_detail(
        stored_btc, real_celery_worker):  # noqa: F811
    sweep = services.create_sweep(strategy="sma_cross", grid=GRID, chunk_size=2, top_k=4, detail="1m", **MARKET,
                                  **RULES)
    sweep = wait_for(sweep.pk)
    assert sweep.status == Status.DONE, sweep.error
    assert (sweep.detail, sweep.completed, sweep.failed) == ("1m", 4, 0)
    changed = 0
    for result in SweepResult.objects.filter(sweep=sweep):
        ref = backtest_with_detail(result.parameters)
        assert result.metrics == ref["metrics"], result.parameters
        report = result.detail_report
        for key in ("source", "ambiguous_exits", "changed", "missing", "untouched", "metric_diff"):
            assert report[key] == ref["detail"][key], (result.parameters, key)
        assert report["ambiguous_exits"] >= 1
        changed += report["changed"]
    assert changed >= 1  # the detail changed some exit, so the sweep really used it
    assert all(row["detail"]["source"] == "1m" for row in sweep.ranking)
    plain = services.run_sweep_in_process("sma_cross", services.plan_param_sets("sma_cross", grid=GRID),
                                          stored_btc, timeframe="1h", rules_kwargs={**RULES, "fee": sweep.fee})
    by_set = {json.dumps(r["parameters"], sort_keys=True): r["metrics"] for r in plain}
    assert any(by_set[json.dumps(r.parameters, sort_keys=True)] != r.metrics
               for r in SweepResult.objects.filter(sweep=sweep))


@pytest.mark.django_db
def test_given_missing_1m_for_an_ambiguous_candle_when_a_sweep_chunk_runs_with_detail_then_a_warning_names_it(
        stored_btc):
    params = {"fast": 5, "slow": 20}
    plain = services.create_run(strategy="sma_cross", parameters=params, enqueue=False, **MARKET, **RULES)
    plain = services.execute_run(plain.pk)
    t = next(x["exit_time"] for x in plain.trades if x["exit_reason"] in ("stop_loss", "take_profit"))
    Candle.objects.filter(exchange="binance", symbol="BTC/USDT", timeframe="1m", timestamp__gt=t - 3_600_000,
                          timestamp__lte=t).delete()
    sweep = services.create_sweep(strategy="sma_cross", grid={"fast": [5], "slow": [20]}, enqueue=False,
                                  detail="1m", **MARKET, **RULES)
    services.execute_sweep_chunk(sweep.pk, 0, [[0, params]])
    report = SweepResult.objects.get(sweep=sweep, index=0).detail_report
    assert report["missing"] >= 1
    assert any(f"({t})" in w and "conservative" in w for w in report["warnings"])
    ref = backtest_with_detail(params)
    assert {k: report[k] for k in ("ambiguous_exits", "changed", "missing", "untouched")} == {
        k: ref["detail"][k] for k in ("ambiguous_exits", "changed", "missing", "untouched")}
    assert [w for w in report["warnings"]] == [w for w in ref["warnings"] if w.startswith("detail 1m:")]
    finished = services.finish_sweep(sweep.pk)
    assert finished.ranking[0]["detail"]["missing"] == report["missing"]


@pytest.mark.django_db
def test_given_detail_with_a_csv_when_sweeping_then_exit_2_naming_detail():
    with pytest.raises(CommandError) as info:
        call_command("sweep", "--strategy", "sma_cross", "--grid", '{"fast": [5], "slow": [20]}', "--data",
                     str(BTC / "binance_BTC_USDT-1h.csv"), "--time-label", "open", "--timeframe", "1h",
                     "--stop-loss", "0.003", "--detail", "1m")
    assert info.value.returncode == 2 and "detail" in str(info.value) and "stored market" in str(info.value)


@pytest.mark.django_db
def test_given_an_unknown_detail_when_a_sweep_is_created_then_the_error_names_the_field(stored_btc):
    with pytest.raises(services.BacktestInputError) as info:
        services.create_sweep(strategy="sma_cross", grid={"fast": [5], "slow": [20]}, enqueue=False,
                              detail="5m", **MARKET)
    assert info.value.field == "detail"


@pytest.mark.django_db(transaction=True)
def test_given_the_sweep_command_with_detail_when_run_then_its_table_and_json_carry_each_sets_detail(stored_btc):
    from io import StringIO

    args = ["sweep", "--strategy", "sma_cross", "--grid", '{"fast": [5, 8], "slow": [20]}', "--stop-loss", "0.003",
            "--take-profit", "0.003", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h",
            "--detail", "1m", "--quiet"]
    out = StringIO()
    call_command(*args, stdout=out)  # eager here: the chord runs in this process
    lines = out.getvalue().splitlines()
    assert sum("detail 1m:" in line and "ambiguous exits on candles alone" in line for line in lines) == 2
    out = StringIO()
    call_command(*args, "--json", stdout=out)
    payload = json.loads(out.getvalue().strip().splitlines()[-1])
    for row in payload["ranking"]:
        ref = backtest_with_detail(row["parameters"])
        assert row["metrics"] == ref["metrics"] and row["detail"]["changed"] == ref["detail"]["changed"]
