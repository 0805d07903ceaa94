"""The one domain-error type. Pure: no Django, no tradebot, no app imports — pure modules raise it too.

Why one type: every interface turns it into the same answer — the API into a 400 JSON body naming the field, a
management command into one line on stderr and exit code 2, the admin into a form error on that field — so a rule is
written once, where it lives, and no caller has to know which module raised.
"""

from __future__ import annotations

from typing import Any


class ApplicationError(ValueError):
    """A request the domain refuses. `field` names the input at fault (dotted for nested input, e.g. "parameters.fast");
    `extra` carries machine-readable detail for API clients."""

    def __init__(self, message: str, *, field: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = dict(extra or {})

    def __reduce__(self):
        # Subclasses have their own constructors (ParameterError(strategy, parameter, message)); pickle the state, not
        # the constructor call, so errors cross process boundaries (Celery results) intact, field included.
        return _restore, (type(self), self.args, self.__dict__)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.message}
        if self.field:
            body["field"] = self.field
        if self.extra:
            body["extra"] = self.extra
        return body


def _restore(cls: type, args: tuple, state: dict[str, Any]) -> ApplicationError:
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc
