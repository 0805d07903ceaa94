"""The backtest commands share one helper module (apps/backtest/management/cli.py); no command imports another."""

import ast
from pathlib import Path

from apps.backtest.management import cli
from apps.common.management import DomainCommand

COMMANDS = Path(cli.__file__).resolve().parent / "commands"


def test_given_the_backtest_commands_when_their_imports_are_read_then_none_imports_another_command():
    for path in COMMANDS.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not any(".management.commands" in m for m in imported), (path.name, imported)


def test_given_the_backtest_commands_when_loaded_then_they_are_domain_commands():
    from importlib import import_module

    for name in ("backtest", "sweep", "walkforward"):
        assert issubclass(import_module(f"apps.backtest.management.commands.{name}").Command, DomainCommand)


def test_given_bad_data_arguments_when_checked_then_a_one_line_usage_error_with_exit_2():
    import pytest
    from django.core.management.base import CommandError

    with pytest.raises(CommandError) as err:
        cli.data_options({"timeframe": "1h", "data": "x.csv"})
    assert err.value.returncode == 2 and "--time-label open|close is required" in str(err.value)
