"""The base settings parse every variable strictly and declare every TRADEBOT_* setting the code reads."""

import re
import runpy
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

ROOT = Path(__file__).resolve().parents[3]
# runpy warns that it re-executes a module that is already imported: that is the point (a fresh load, env patched).
pytestmark = pytest.mark.filterwarnings("ignore:'tradebot.settings.base' found in sys.modules:RuntimeWarning")


def load_base(monkeypatch, **env) -> dict:
    """Execute tradebot/settings/base.py afresh under `env` (the running settings are not touched)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_module("tradebot.settings.base", run_name="tradebot.settings.base_under_test")


@pytest.mark.parametrize(("name", "bad"), [
    ("DJANGO_DEBUG", "sometimes"),
    ("CELERY_TASK_ALWAYS_EAGER", "eager"),
    ("TRADEBOT_DEFAULT_FEE", "0.1%"),
    ("TRADEBOT_DEFAULT_FEE", "1.5"),
    ("TRADEBOT_FETCH_LIMIT", "many"),
    ("TRADEBOT_FETCH_LIMIT", "0"),
    ("TRADEBOT_RAW_TRADES_MONTHS_AHEAD", "three"),
    ("TRADEBOT_REPLAY_STEP", "1m"),
    ("TRADEBOT_INDICATOR_CACHE_MB", "lots"),
    ("TRADEBOT_MARKET_SOFT_TIME_LIMIT", "5min"),
    ("TRADEBOT_BOTS_TIME_LIMIT", "-1"),
    ("TRADEBOT_BACKTEST_SOFT_TIME_LIMIT", "x"),
    ("DJANGO_CONN_MAX_AGE", "forever"),
    ("NOTIFY_BACKEND", "carrier-pigeon"),
    ("LOG_LEVEL", "loud"),
])
def test_given_a_malformed_variable_when_settings_load_then_improperly_configured_names_it(monkeypatch, name, bad):
    with pytest.raises(ImproperlyConfigured) as err:
        load_base(monkeypatch, **{name: bad})
    assert name in str(err.value) and bad in str(err.value)


def test_given_a_soft_limit_not_below_the_hard_limit_when_settings_load_then_both_variables_are_named(monkeypatch):
    with pytest.raises(ImproperlyConfigured) as err:
        load_base(monkeypatch, TRADEBOT_BOTS_SOFT_TIME_LIMIT="300", TRADEBOT_BOTS_TIME_LIMIT="300")
    assert "TRADEBOT_BOTS_SOFT_TIME_LIMIT" in str(err.value) and "TRADEBOT_BOTS_TIME_LIMIT" in str(err.value)


def test_given_valid_values_when_settings_load_then_they_are_typed(monkeypatch, tmp_path):
    s = load_base(monkeypatch, TRADEBOT_DEFAULT_FEE="0.0005", TRADEBOT_FETCH_LIMIT="500", TRADEBOT_REPLAY_STEP="2",
                  TRADEBOT_REPLAY_SOURCE="okx", TRADEBOT_STRATEGIES="a.b.C, d.e.F", DJANGO_DEBUG="yes",
                  TRADEBOT_BOT_CONFIG_DIR=str(tmp_path), TRADEBOT_BACKTEST_SOFT_TIME_LIMIT="1.5")
    assert s["TRADEBOT_DEFAULT_FEE"] == 0.0005 and s["TRADEBOT_FETCH_LIMIT"] == 500
    assert s["TRADEBOT_REPLAY_STEP"] == 2 and s["TRADEBOT_REPLAY_SOURCE"] == "okx"
    assert s["TRADEBOT_STRATEGIES"] == ["a.b.C", "d.e.F"] and s["DEBUG"] is True
    assert s["TRADEBOT_BOT_CONFIG_DIR"] == tmp_path and s["TRADEBOT_BACKTEST_SOFT_TIME_LIMIT"] == 1.5


def test_given_nothing_set_when_base_loads_then_debug_is_off(monkeypatch):
    monkeypatch.delenv("DJANGO_DEBUG", raising=False)
    assert load_base(monkeypatch)["DEBUG"] is False


def test_given_the_code_when_grepped_for_tradebot_settings_then_each_is_declared_in_base_with_a_comment():
    read = set()
    for path in [*ROOT.glob("apps/**/*.py"), *ROOT.glob("tradebot/*.py")]:
        read |= set(re.findall(r"\b(TRADEBOT_[A-Z0-9_]+)\b", path.read_text()))
    base_lines = (ROOT / "tradebot" / "settings" / "base.py").read_text().splitlines()
    declared = {}
    for i, line in enumerate(base_lines):
        m = re.match(r"^(?:[A-Z_]+ = )?(TRADEBOT_[A-Z0-9_]+) = ", line)
        if m:
            declared[m.group(1)] = i
    assert read, "no TRADEBOT_ setting found in the code"
    missing = sorted(read - set(declared))
    assert not missing, f"read but not declared in tradebot/settings/base.py: {missing}"
    for name, i in declared.items():
        above = [line for line in base_lines[max(0, i - 8):i] if line.startswith("#")]
        assert above, f"{name} has no comment above its declaration in base.py"
