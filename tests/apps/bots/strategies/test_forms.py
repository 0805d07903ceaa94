"""One strategy written in the three forms (compute, populate, process_data) makes identical signals and trades through
the backtest, sweep and bot paths; user strategy files load from a folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apps.backtest.engine.chunk import run_chunk
from apps.backtest.engine.run import run_backtest
from apps.bots.strategies import BaseStrategy, registry
from apps.bots.trading.candles import CandleArrays
from apps.bots.trading.fills import FillRules
from tests.apps.bots.strategies.forms import FORMS, BreakoutCompute, BreakoutProcessData

RULES = FillRules(stop_loss=0.02, take_profit=0.03)


@pytest.fixture
def clean_registry():
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def test_given_the_three_forms_when_asked_their_form_then_each_is_recognised():
    assert [cls.form() for cls in FORMS] == ["compute", "populate", "process_data"]
    assert BreakoutProcessData.form_warning() and "slow" in BreakoutProcessData.form_warning()
    assert BreakoutCompute.form_warning() is None


def test_given_a_class_with_no_form_when_registered_then_a_clear_error(clean_registry):
    class Empty(BaseStrategy):
        name = "test_empty"

    with pytest.raises(TypeError, match="must implement one of compute"):
        registry.register(Empty)


def test_given_one_strategy_in_three_forms_when_signals_are_computed_then_identical(eth_1h):
    df = eth_1h.iloc[:800]
    frames = [cls({"window": 12}).signals(df) for cls in FORMS]
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame[["action", "confidence", "upper", "lower"]],
                                      frames[0][["action", "confidence", "upper", "lower"]])
    assert (frames[0]["action"] == 1).sum() > 5 and (frames[0]["action"] == -1).sum() > 5


def test_given_one_strategy_in_three_forms_when_backtested_then_identical_trades(eth_1h):
    df = eth_1h.iloc[:1200]
    results = [run_backtest(df, cls({"window": 24}), RULES, "1h") for cls in FORMS]
    dicts = [r.to_dict() for r in results]
    assert len(dicts[0]["trades"]) >= 5
    assert {t["exit_reason"] for t in dicts[0]["trades"]} >= {"signal"}
    for d in dicts[1:]:
        assert d["trades"] == dicts[0]["trades"]
        assert d["final_equity"] == dicts[0]["final_equity"]
        assert d["metrics"] == dicts[0]["metrics"]
    assert any("process_data" in w and "slow" in w for w in dicts[2]["warnings"])
    assert not any("slow" in w for w in dicts[0]["warnings"] + dicts[1]["warnings"])


def test_given_one_strategy_in_three_forms_when_swept_then_identical_metrics(eth_1h):
    arrays = CandleArrays.from_frame(eth_1h.iloc[:900])
    sets = [{"window": w} for w in (10, 30)]
    out = [run_chunk(arrays, cls, sets, RULES, "1h", cache={}) for cls in FORMS]
    for rows in out:
        assert [r["error"] for r in rows] == ["", ""]
    for rows in out[1:]:
        assert [r["metrics"] for r in rows] == [r["metrics"] for r in out[0]]


def test_given_the_populate_form_when_process_data_decides_the_last_row_then_it_equals_the_vectorized_row(eth_1h):
    strategy = FORMS[1]({"window": 12})
    full = strategy.signals(eth_1h.iloc[:300])
    for t in range(0, 300, 7):
        sig = strategy.process_data(eth_1h.iloc[: t + 1])
        assert sig.action == {1: "buy", -1: "sell", 0: "hold"}[int(full["action"].iat[t])]
        assert sig.timestamp == int(eth_1h["timestamp"].iat[t])
    assert set(strategy.get_indicators()) == {"upper", "lower"}


def test_given_a_strategies_folder_when_loaded_then_its_named_strategies_are_registered(tmp_path, clean_registry,
                                                                                         eth_1h):
    (tmp_path / "mine.py").write_text(
        "from apps.bots.strategies import BaseStrategy, Param\n"
        "class Mine(BaseStrategy):\n"
        "    name = 'test_folder_mine'\n"
        "    params = (Param('n', int, 3, min=1),)\n"
        "    def populate(self, df):\n"
        "        df['buy'] = df['close'] > df['open']\n"
        "        df['sell'] = df['close'] < df['open']\n"
        "        return df\n"
    )
    (tmp_path / "_private.py").write_text("raise RuntimeError('never imported')\n")
    assert registry.load_strategy_folder(tmp_path) == ["test_folder_mine"]
    sig = registry.create_strategy("test_folder_mine").signals(eth_1h.iloc[:50])
    expected = np.where(eth_1h["close"].iloc[:50] > eth_1h["open"].iloc[:50], 1,
                        np.where(eth_1h["close"].iloc[:50] < eth_1h["open"].iloc[:50], -1, 0))
    assert sig["action"].tolist() == expected.tolist()


def test_given_a_broken_strategy_file_when_loaded_then_the_error_names_the_file(tmp_path, clean_registry):
    (tmp_path / "broken.py").write_text("import nope_not_a_module\n")
    with pytest.raises(ImportError, match="broken.py"):
        registry.load_strategy_folder(tmp_path)
