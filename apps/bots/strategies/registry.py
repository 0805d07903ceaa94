"""Strategies by name (pure: no Django). Built-ins register on import; user strategies are registered from dotted
paths and from the `*.py` files of a folder (the Django side passes settings.TRADEBOT_STRATEGIES and
settings.TRADEBOT_STRATEGIES_DIR, default the project's `strategies/` folder:
apps.bots.apps.load_configured_strategies)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from apps.common.errors import ApplicationError

_REGISTRY: dict[str, type] = {}


class UnknownStrategyError(ApplicationError):
    """No strategy registered under that name (field `strategy`)."""

    def __init__(self, message: str, *, field: str | None = "strategy", extra: dict[str, Any] | None = None) -> None:
        super().__init__(message, field=field, extra=extra)


def register(cls: type) -> type:
    """Class decorator: make a strategy available by its `name`."""
    from apps.bots.strategies.base import BaseStrategy

    name = getattr(cls, "name", None)
    if not name:
        raise ValueError(f"{cls.__qualname__} needs a class attribute `name` to be registered")
    if not (isinstance(cls, type) and issubclass(cls, BaseStrategy)):
        raise TypeError(f"strategy {name!r} ({cls!r}) must subclass apps.bots.strategies.base.BaseStrategy")
    cls.form()  # TypeError naming the strategy when it implements none of compute / populate / process_data
    _REGISTRY[name] = cls
    return cls


def get_strategy_class(name: str) -> type:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownStrategyError(
            f"unknown strategy {name!r}: expected one of {', '.join(sorted(_REGISTRY))}"
        ) from None


def create_strategy(name: str, parameters: Mapping[str, Any] | None = None):
    """Instantiate a registered strategy with validated parameters (raises UnknownStrategyError / ParameterError)."""
    return get_strategy_class(name)(parameters)


def available() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    importlib.import_module("apps.bots.strategies.builtins")


def load_user_strategies(paths: Iterable[str], folder: str | Path | None = None) -> None:
    """Import "package.module.ClassName" entries and register them (the class may also self-register), then every
    `*.py` file of `folder` if given (see `load_strategy_folder`)."""
    if folder:
        load_strategy_folder(folder)
    for dotted in paths:
        module_name, _, attr = dotted.rpartition(".")
        if not module_name:
            raise ValueError(f"TRADEBOT_STRATEGIES entry {dotted!r} must be 'package.module.ClassName'")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(f"TRADEBOT_STRATEGIES entry {dotted!r}: cannot import {module_name!r} ({exc})") from exc
        try:
            cls = getattr(module, attr)
        except AttributeError:
            raise ImportError(f"TRADEBOT_STRATEGIES entry {dotted!r}: module {module_name!r} has no {attr!r}") from None
        register(cls)


def load_strategy_folder(folder: str | Path) -> list[str]:
    """Import each `*.py` file of `folder` (not starting with "_") as module `tradebot_user_strategies.<stem>` and
    register the BaseStrategy subclasses it defines that have a `name` (decorated or not). Returns their names.
    A missing folder is nothing to load; a file that fails to import raises ImportError naming the file."""
    from apps.bots.strategies.base import BaseStrategy

    root = Path(folder)
    if not root.is_dir():
        return []
    names: list[str] = []
    for path in sorted(root.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module_name = f"tradebot_user_strategies.{path.stem}"
        module = sys.modules.get(module_name)
        if module is None or getattr(module, "__file__", None) != str(path):
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
                raise ImportError(f"strategy file {path}: cannot be imported")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[module_name]
                raise ImportError(f"strategy file {path}: {type(exc).__name__}: {exc}") from exc
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, BaseStrategy) and obj.__module__ == module_name
                    and getattr(obj, "name", "")):
                register(obj)
                names.append(obj.name)
    return names
