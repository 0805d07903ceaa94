"""One guard for state a user never edits directly (a bot's lifecycle and portfolio, a market's collection state).

Pure: no Django. The API views, the admin and the services of every app call this one function, so a write naming
such a field is refused the same way everywhere: an ApplicationError naming the field (a 400 in the API), never a
silent drop. A field sent back with the object's current value is no edit (a GET body PUT back unchanged is fine).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from apps.common.errors import ApplicationError


def refuse_state_fields(data: Any, state_fields: Collection[str], *, current: Mapping[str, Any] | None = None,
                        how: str = "it changes through the object's actions, not edits") -> None:
    """Raise for the first key of `data` in `state_fields` whose value differs from `current` (if given)."""
    if not hasattr(data, "keys"):
        return  # not an object: the input serializer answers for the shape
    current = current or {}
    for name in data.keys():
        if name in state_fields and not (name in current and current[name] == data[name]):
            raise ApplicationError(f"{name!r} is read-only state: {how}", field=name)
