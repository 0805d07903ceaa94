"""Strict environment parsing for the settings profiles.

Every reader takes the variable's name and a default (used when the variable is unset or blank). A value that is set
but malformed (a boolean that is not one of 1/0/true/false/yes/no/on/off, a number that does not parse or lies out of
range, JSON that does not decode) raises `ImproperlyConfigured` naming the variable and the value, so a typo in a
deployment stops the process at start-up instead of silently meaning the default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})
_UNSET: Any = object()


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _bad(name: str, value: str, expected: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"environment variable {name}={value!r} is not {expected}")


def env_str(name: str, default: Any = _UNSET) -> str:
    """The raw string; without a default the variable is required."""
    value = _raw(name)
    if value is None:
        if default is _UNSET:
            raise ImproperlyConfigured(f"environment variable {name} must be set")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    low = value.lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise _bad(name, value, "a boolean (one of 1/0, true/false, yes/no, on/off)")


def _check_range(name: str, value: str, number: float, minimum: float | None, maximum: float | None,
                 below: float | None) -> None:
    if minimum is not None and number < minimum:
        raise _bad(name, value, f"a number >= {minimum:g}")
    if maximum is not None and number > maximum:
        raise _bad(name, value, f"a number <= {maximum:g}")
    if below is not None and number >= below:
        raise _bad(name, value, f"a number < {below:g}")


def env_int(name: str, default: int | None, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise _bad(name, value, "an integer") from None
    _check_range(name, value, number, minimum, maximum, None)
    return number


def env_float(name: str, default: float | None, *, minimum: float | None = None, maximum: float | None = None,
              below: float | None = None) -> float | None:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise _bad(name, value, "a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise _bad(name, value, "a finite number")
    _check_range(name, value, number, minimum, maximum, below)
    return number


def env_list(name: str, default: list[str] | None = None, *, separator: str = ",") -> list[str]:
    """Comma-separated items, blanks dropped ("a, b,," -> ["a", "b"])."""
    value = _raw(name)
    if value is None:
        return list(default or [])
    return [item.strip() for item in value.split(separator) if item.strip()]


def env_json(name: str, default: Any = None) -> Any:
    value = _raw(name)
    if value is None:
        return default
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise _bad(name, value, f"valid JSON ({exc.msg} at column {exc.colno})") from None


def env_path(name: str, default: Path) -> Path:
    value = _raw(name)
    return Path(default) if value is None else Path(value).expanduser()
