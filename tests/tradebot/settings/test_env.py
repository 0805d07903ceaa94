"""Strict environment parsing (tradebot.settings.env): a malformed value names the variable and the value."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from tradebot.settings.env import env_bool, env_float, env_int, env_json, env_list, env_path, env_str

VAR = "TRADEBOT_TEST_ENV_VALUE"


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("TRUE", True), (" yes ", True), ("on", True),
                                               ("0", False), ("false", False), ("No", False), ("off", False)])
def test_given_a_boolean_spelling_when_parsed_then_it_is_understood(monkeypatch, raw, expected):
    monkeypatch.setenv(VAR, raw)
    assert env_bool(VAR, not expected) is expected


@pytest.mark.parametrize("reader", [env_bool, env_int, env_float, env_json, env_str])
def test_given_an_unset_or_blank_variable_when_parsed_then_the_default_is_returned(monkeypatch, reader):
    monkeypatch.delenv(VAR, raising=False)
    assert reader(VAR, "default") == "default"
    monkeypatch.setenv(VAR, "  ")
    assert reader(VAR, "default") == "default"


@pytest.mark.parametrize(("reader", "raw", "expected_words"), [
    (lambda: env_bool(VAR, False), "maybe", "a boolean"),
    (lambda: env_int(VAR, 1), "12abc", "an integer"),
    (lambda: env_int(VAR, 1), "1.5", "an integer"),
    (lambda: env_int(VAR, 1, minimum=1), "0", "a number >= 1"),
    (lambda: env_float(VAR, 1.0), "fast", "a number"),
    (lambda: env_float(VAR, 1.0), "nan", "a finite number"),
    (lambda: env_float(VAR, 1.0, below=1.0), "1", "a number < 1"),
    (lambda: env_float(VAR, 1.0, maximum=2.0), "3", "a number <= 2"),
    (lambda: env_json(VAR, {}), "{not json", "valid JSON"),
])
def test_given_a_malformed_value_when_parsed_then_improperly_configured_names_variable_and_value(
        monkeypatch, reader, raw, expected_words):
    monkeypatch.setenv(VAR, raw)
    with pytest.raises(ImproperlyConfigured) as err:
        reader()
    assert VAR in str(err.value) and repr(raw.strip()) in str(err.value) and expected_words in str(err.value)


def test_given_numbers_lists_json_and_paths_when_parsed_then_typed_values_are_returned(monkeypatch, tmp_path):
    monkeypatch.setenv(VAR, "42")
    assert env_int(VAR, 0) == 42 and env_float(VAR, 0.0) == 42.0
    monkeypatch.setenv(VAR, " a, b,, c ")
    assert env_list(VAR) == ["a", "b", "c"]
    monkeypatch.setenv(VAR, '{"x": [1, 2]}')
    assert env_json(VAR) == {"x": [1, 2]}
    monkeypatch.setenv(VAR, str(tmp_path))
    assert env_path(VAR, tmp_path / "other") == tmp_path


def test_given_a_required_variable_when_unset_then_improperly_configured_names_it(monkeypatch):
    monkeypatch.delenv(VAR, raising=False)
    with pytest.raises(ImproperlyConfigured, match=f"{VAR} must be set"):
        env_str(VAR)
