"""Django-side helper for management commands: domain errors become one stderr line and exit code 2.

`DomainCommand` is a `BaseCommand` whose `execute` turns an `apps.common.errors.ApplicationError` that escapes
`handle` (every app's domain error subclasses it: ParameterError, TimeframeError, CsvFormatError, BacktestInputError,
...; a command may list other types in `domain_errors`) into `CommandError(message, returncode=2)`: Django prints it
as one line ("CommandError: ...") on stderr and exits 2; no traceback. Errors a command already maps itself (to exit
1 or 2) are left as they are. Kept out of the pure `errors.py`: this module imports Django.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.common.errors import ApplicationError


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (whitespace collapsed), or its type name when it has none."""
    return " ".join(str(exc).split()) or type(exc).__name__


def usage_error(message: Any) -> CommandError:
    """A usage error: one line on stderr, exit code 2."""
    return CommandError(" ".join(str(message).split()), returncode=2)


class DomainCommand(BaseCommand):
    #: Error types that mean "the input is refused", besides ApplicationError: one stderr line and exit code 2.
    domain_errors: tuple[type[BaseException], ...] = ()

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        except CommandError:
            raise
        except (ApplicationError, *self.domain_errors) as exc:
            raise usage_error(one_line(exc)) from exc
