"""Bot JSON configs (config/bots/*.json): schema and loading, with errors that name the file and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from apps.bots.strategies.base import ParameterError
from apps.bots.strategies.registry import UnknownStrategyError, get_strategy_class
from apps.market.timeframes import TIMEFRAMES


class BotConfigError(ValueError):
    """A bot config that cannot be used; the message names the file and the field."""


class BotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    strategy: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    exchange: str = Field(min_length=1, max_length=32)
    symbol: str = Field(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9]+/[A-Za-z0-9]+$")
    timeframe: str
    initial_balance: float = Field(default=10_000.0, gt=0)
    fee_rate: float = Field(default=0.001, ge=0, lt=1)
    fraction: float = Field(default=1.0, gt=0, le=1)
    slippage: float = Field(default=0.0, ge=0, lt=1)
    stop_loss: float | None = Field(default=None, gt=0, lt=1)
    take_profit: float | None = Field(default=None, gt=0)
    enabled: bool = True

    @field_validator("timeframe")
    @classmethod
    def _known_timeframe(cls, value: str) -> str:
        if value not in TIMEFRAMES:
            raise ValueError(f"unknown timeframe {value!r}: expected one of {', '.join(TIMEFRAMES)}")
        return value

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        try:
            get_strategy_class(value)
        except UnknownStrategyError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("parameters")
    @classmethod
    def _valid_parameters(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("strategy")
        if name is None:  # the strategy itself was invalid; that error is reported
            return value
        try:
            return dict(get_strategy_class(name)(value).parameters)
        except ParameterError as exc:
            raise ValueError(str(exc)) from None


def parse_config(data: Any, *, source: str = "<config>") -> BotConfig:
    try:
        return BotConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(config)"
        message = err["msg"].removeprefix("Value error, ")
        raise BotConfigError(f"{source}: field '{field}': {message}") from None


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
            raise BotConfigError(f"{path}: field 'name': {config.name!r} is already used by {names[config.name]}")
        names[config.name] = path
        configs.append((path, config))
    return configs
