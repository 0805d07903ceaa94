"""Parameter spaces of a sweep (pure: no Django): expand a grid, draw seeded random samples, validate each set, chunk.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from apps.backtest.engine.metrics import jsonable
from apps.common.errors import ApplicationError


class SweepSpaceError(ApplicationError):
    """A sweep space that cannot be expanded (names the parameter and what is wrong)."""


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of a grid {name: [values]} in a stable order (names as given, values as listed)."""
    if not isinstance(grid, Mapping) or not grid:
        raise SweepSpaceError("grid must be a non-empty JSON object {parameter: [values, ...]}")
    names = list(grid)
    values = []
    for name in names:
        vals = grid[name]
        if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence):
            vals = [vals]
        if len(vals) == 0:
            raise SweepSpaceError(f"grid parameter {name!r} has no values")
        values.append(list(vals))
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def _param_map(strategy_cls: type) -> dict[str, Any]:
    space = strategy_cls.param_space() if hasattr(strategy_cls, "param_space") else getattr(strategy_cls, "params", ())
    return {p.name: p for p in space}


def random_samples(strategy_cls: type, n: int, *, seed: int | None = None,
                   space: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """N seeded random parameter sets drawn from the strategy's declared Param ranges/choices.

    `space` overrides per parameter: {"fast": [5, 50]} (min, max), {"fast": {"min": 5, "max": 50}},
    {"kind": {"choices": [...]}} or a fixed scalar value. Parameters absent from both keep their default.
    """
    if n <= 0:
        raise SweepSpaceError(f"random sample count must be positive, got {n}")
    params = _param_map(strategy_cls)
    space = dict(space or {})
    unknown = sorted(set(space) - set(params))
    if unknown:
        raise SweepSpaceError(
            f"unknown parameter {unknown[0]!r} for strategy {strategy_cls.name!r}: expected one of {', '.join(params)}"
        )
    rng = np.random.default_rng(seed)
    samplers = {name: _sampler(p, space.get(name)) for name, p in params.items()}
    out = []
    for _ in range(n):
        out.append({name: sample(rng) for name, sample in samplers.items()})
    return out


def _sampler(param: Any, override: Any):
    ptype = param.type if isinstance(param.type, type) else {"int": int, "float": float, "bool": bool,
                                                              "str": str}.get(str(param.type), float)
    lo, hi, choices = param.min, param.max, param.choices
    if override is not None:
        if isinstance(override, Mapping):
            lo = override.get("min", lo)
            hi = override.get("max", hi)
            choices = override.get("choices", None if ("min" in override or "max" in override) else choices)
        elif isinstance(override, Sequence) and not isinstance(override, str):
            if len(override) != 2:
                raise SweepSpaceError(f"space for {param.name!r} must be [min, max] or {{'choices': [...]}}")
            lo, hi = override
            choices = None
        else:
            return lambda rng, v=override: v
    if choices:
        options = list(choices)
        return lambda rng: _plain(options[int(rng.integers(0, len(options)))])
    if ptype is bool:
        return lambda rng: bool(rng.integers(0, 2))
    if ptype in (int, float):
        if lo is None or hi is None:
            if override is None:
                return lambda rng, v=param.default: v
            raise SweepSpaceError(f"space for {param.name!r} needs both min and max")
        if hi < lo:
            raise SweepSpaceError(f"space for {param.name!r}: max {hi} < min {lo}")
        if ptype is int:
            return lambda rng: int(rng.integers(int(lo), int(hi) + 1))
        return lambda rng: float(rng.uniform(float(lo), float(hi)))
    return lambda rng, v=param.default: v


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def validate_param_sets(strategy_cls: type, param_sets: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """[{index, parameters, error}] : each set validated by the strategy; a bad one carries its reason, alone."""
    out = []
    for index, params in enumerate(param_sets):
        try:
            strategy = strategy_cls(dict(params))
            full = dict(getattr(strategy, "parameters", params))
            out.append({"index": index, "parameters": jsonable(full), "error": ""})
        except (ValueError, TypeError) as exc:  # ParameterError is a ValueError
            out.append({"index": index, "parameters": jsonable(dict(params)), "error": f"{type(exc).__name__}: {exc}"})
    return out


def split_chunks(items: Sequence[Any], chunk_size: int) -> list[list[Any]]:
    if chunk_size <= 0:
        raise SweepSpaceError(f"chunk size must be positive, got {chunk_size}")
    return [list(items[i:i + chunk_size]) for i in range(0, len(items), chunk_size)]
