"""DomainCommand: a domain error escaping a command is one stderr line and exit code 2, never a traceback."""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.bots.strategies.base import ParameterError
from apps.common.errors import ApplicationError
from apps.common.management import DomainCommand


class Refusing(DomainCommand):
    domain_errors = (KeyError,)

    def __init__(self, exc: BaseException, **kwargs):
        super().__init__(**kwargs)
        self.exc = exc

    def handle(self, *args, **options):
        raise self.exc


def run_from_argv(exc: BaseException) -> tuple[int, str]:
    err = io.StringIO()
    cmd = Refusing(exc, stdout=io.StringIO(), stderr=err)
    with pytest.raises(SystemExit) as exit_:
        cmd.run_from_argv(["manage.py", "refusing"])
    return exit_.value.code, err.getvalue()


@pytest.mark.parametrize(("exc", "line"), [
    (ApplicationError("initial_balance must be > 0,\n  got -5", field="initial_balance"),
     "CommandError: initial_balance must be > 0, got -5\n"),
    (KeyError("a listed non-ApplicationError type"), "CommandError: 'a listed non-ApplicationError type'\n"),
    (ParameterError("sma_cross", "fast", "parameter 'fast' must be < slow (20), got 30"),
     "CommandError: sma_cross: parameter 'fast' must be < slow (20), got 30\n"),
])
def test_given_a_domain_error_when_a_command_raises_it_then_one_stderr_line_and_exit_2(exc, line):
    code, stderr = run_from_argv(exc)

    assert code == 2
    assert stderr == line


def test_given_a_domain_error_when_called_in_process_then_command_error_with_returncode_2():
    with pytest.raises(CommandError) as err:
        call_command(Refusing(ApplicationError("bad symbol", field="symbol")))
    assert err.value.returncode == 2 and str(err.value) == "bad symbol"


def test_given_a_command_error_or_a_bug_when_raised_then_they_are_not_turned_into_exit_2():
    with pytest.raises(CommandError) as err:
        call_command(Refusing(CommandError("data problem")))
    assert err.value.returncode == 1
    with pytest.raises(ZeroDivisionError):
        call_command(Refusing(ZeroDivisionError("a bug keeps its traceback")))


def test_given_every_project_command_when_loaded_then_each_is_a_domain_command():
    from django.core.management import get_commands, load_command_class

    ours = {name: app for name, app in get_commands().items() if app.startswith("apps.") or app == "tradebot"}
    assert {"demo", "backtest", "sweep", "walkforward", "import_candles"} <= set(ours)
    plain = sorted(name for name, app in ours.items() if not isinstance(load_command_class(app, name), DomainCommand))
    assert not plain, f"commands not built on apps.common.management.DomainCommand: {plain}"
