"""THE bot config validator: one schema for config/bots/*.json, the API, the admin form and commands.

A bot config is what a user may set on a bot (name, strategy and parameters, market, fill rules). Everything else on a
Bot row (status, virtual portfolio, liveness) is lifecycle state that only the services change. Errors are
`BotConfigError` (an ApplicationError) naming the field: `strategy`, `parameters.fast`, `fee_rate`, ...

Rules live where their concept lives and are only called from here: strategy names in the strategy registry, parameter
types and ranges in the strategy's declared `Param`s, fill-rule ranges in `apps.bots.trading.fills.FillRules`,
timeframes in `apps.market.timeframes`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from apps.bots.strategies.registry import get_strategy_class
from apps.bots.trading.fills import FillRules
from apps.common.errors import ApplicationError
from apps.market.timeframes import timeframe_ms

# Bot fields named differently in the fill rules.
_RULE_NAMES = {"fee_rate": "fee", "slippage": "slippage", "fraction": "fraction", "stop_loss": "stop_loss",
               "take_profit": "take_profit", "initial_balance": "initial_balance"}
CONFIG_FIELDS: tuple[str, ...] = ("name", "strategy", "parameters", "exchange", "symbol", "timeframe",
                                  "initial_balance", "fee_rate", "fraction", "slippage", "stop_loss", "take_profit")


class BotConfigError(ApplicationError):
    """A bot config that cannot be used; the message names the source and the field, `field` holds the field."""


def default_fee_rate() -> float:
    """settings.TRADEBOT_DEFAULT_FEE (the same default fee as backtests), 0.001 outside Django."""
    try:
        from django.conf import settings

        return float(getattr(settings, "TRADEBOT_DEFAULT_FEE", 0.001))
    except Exception:  # noqa: BLE001 - settings not configured (pure use): the documented default
        return 0.001


class BotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    strategy: str = Field(min_length=1, max_length=64)
    parameters: dict[str, Any] = Field(default_factory=dict)
    exchange: str = Field(min_length=1, max_length=32)
    symbol: str = Field(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9]+/[A-Za-z0-9]+$")
    timeframe: str
    initial_balance: float = 10_000.0
    fee_rate: float = Field(default_factory=default_fee_rate)
    fraction: float = 1.0
    slippage: float = 0.0
    stop_loss: float | None = None
    take_profit: float | None = None
    enabled: bool = True

    @field_validator("timeframe")
    @classmethod
    def _known_timeframe(cls, value: str) -> str:
        timeframe_ms(value)  # TimeframeError (a ValueError) names the choices
        return value

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        get_strategy_class(value)  # UnknownStrategyError lists the choices
        return value

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameters_object(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValueError(f"must be a JSON object {{name: value}}, got {type(value).__name__}")
        return value

    @field_validator("parameters")
    @classmethod
    def _valid_parameters(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("strategy")
        if name is None:  # the strategy itself was invalid; that error is reported
            return value
        return dict(get_strategy_class(name)(value).parameters)  # ParameterError names parameters.<name>

    @model_validator(mode="after")
    def _valid_rules(self) -> BotConfig:
        self.rules()
        return self

    def rules(self) -> FillRules:
        """The fill rules of this bot (FillRules validates the ranges: the backtest's own rule)."""
        try:
            return FillRules(**{rule: getattr(self, name) for name, rule in _RULE_NAMES.items()})
        except ApplicationError as exc:
            bot_field = next((k for k, v in _RULE_NAMES.items() if v == exc.field), exc.field)
            message = exc.message.replace(f"{exc.field!r}", f"{bot_field!r}", 1)
            raise ApplicationError(message, field=bot_field) from None

    def bot_fields(self) -> dict[str, Any]:
        """The Bot model fields this config sets."""
        return {name: getattr(self, name) for name in CONFIG_FIELDS}


def _field_of(err: Mapping[str, Any]) -> tuple[str, str]:
    """(field, message) of one pydantic error; domain errors raised inside validators keep their own field."""
    cause = (err.get("ctx") or {}).get("error")
    loc = ".".join(str(p) for p in err["loc"])
    if isinstance(cause, ApplicationError):
        field = cause.field if cause.field and (not loc or cause.field.startswith(loc)) else (loc or cause.field)
        return field or "(config)", cause.message
    return loc or "(config)", err["msg"].removeprefix("Value error, ")


def parse_config(data: Any, *, source: str = "<config>") -> BotConfig:
    """Validate a bot config; the first error raises BotConfigError("<source>: field '<f>': <message>", field=<f>)."""
    if isinstance(data, BotConfig):
        return data
    try:
        return BotConfig.model_validate(data)
    except ValidationError as exc:
        field, message = _field_of(exc.errors()[0])
        raise BotConfigError(f"{source}: field '{field}': {message}", field=field) from None


def validate_config(data: Mapping[str, Any], *, source: str = "bot") -> BotConfig:
    """The API/admin/command entry: like parse_config, but the message reads "field 'x': ..." without a file."""
    if isinstance(data, BotConfig):
        return data
    try:
        return BotConfig.model_validate(dict(data))
    except ValidationError as exc:
        field, message = _field_of(exc.errors()[0])
        raise BotConfigError(f"{field}: {message}", field=field, extra={"source": source}) from None


def load_config_file(path: Path) -> BotConfig:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BotConfigError(f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON ({exc.msg})") from None
    except OSError as exc:
        raise BotConfigError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_config(data, source=str(path))


def load_config_dir(directory: Path) -> list[tuple[Path, BotConfig]]:
    """All configs of a folder with their files, sorted by file name; the first bad one raises (names clash too)."""
    configs: list[tuple[Path, BotConfig]] = []
    names: dict[str, Path] = {}
    for path in sorted(Path(directory).glob("*.json")):
        config = load_config_file(path)
        if config.name in names:
            raise BotConfigError(f"{path}: field 'name': {config.name!r} is already used by {names[config.name]}",
                                 field="name")
        names[config.name] = path
        configs.append((path, config))
    return configs


def expand_fleet(data: Any, *, source: str) -> list[BotConfig]:
    """A fleet file `{"template": {...one bot config...}, "grid": {"fast": [5, 10], "slow": [50, 100]}}`: one bot per
    grid point (the product of the lists). Grid keys are strategy parameters, or bot fields (e.g. "symbol",
    "stop_loss") when the config has such a field; each bot is named `<template name>-<key><value>-...`."""
    import itertools

    template, grid = data.get("template"), data.get("grid")
    extra = sorted(set(data) - {"template", "grid"})
    if extra:
        raise BotConfigError(f"{source}: field '{extra[0]}': unknown field of a fleet file (expected template, grid)")
    if not isinstance(template, dict):
        raise BotConfigError(f"{source}: field 'template': must be an object (one bot config)")
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise BotConfigError(f"{source}: field 'grid': must map names to non-empty lists of values")
    keys = list(grid)
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        config = json.loads(json.dumps(template))
        config.setdefault("parameters", {})
        suffix = []
        for key, value in zip(keys, values, strict=True):
            if key in BotConfig.model_fields and key not in ("name", "parameters"):
                config[key] = value
            else:
                config["parameters"][key] = value
            suffix.append(f"{key}{value}")
        config["name"] = "-".join([str(template.get("name", "fleet")), *suffix])
        out.append(parse_config(config, source=f"{source} (grid point {dict(zip(keys, values, strict=True))})"))
    return out


def load_config_entries(path: Path) -> list[BotConfig]:
    """The bots of one config file: a single bot config, or a fleet file (template + grid)."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise BotConfigError(f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON ({exc.msg})") from None
    except OSError as exc:
        raise BotConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if isinstance(data, dict) and "template" in data:
        return expand_fleet(data, source=str(path))
    return [parse_config(data, source=str(path))]
