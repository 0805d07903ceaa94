"""The import-linter contracts of pyproject.toml (`make lint`): the tree keeps them, and a violation fails naming
the offending import chain."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-logo", "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}, timeout=120)


def _copy_tree(tmp_path: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "migrations")
    for package in ("apps", "tradebot"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_given_the_tree_when_linting_imports_then_every_contract_is_kept():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 2 kept, 0 broken." in out.stdout


def test_given_a_pure_module_reaching_django_through_a_chain_when_linting_then_it_fails_with_the_chain(tmp_path):
    root = _copy_tree(tmp_path)
    indicators = root / "apps" / "bots" / "strategies" / "indicators.py"
    indicators.write_text(indicators.read_text() + "\nfrom apps.market import selectors  # noqa\n")
    out = _lint(root)
    assert out.returncode == 1
    assert "apps.bots.strategies is not allowed to import apps.market.selectors" in out.stdout
    assert "apps.bots.strategies.indicators -> apps.market.selectors" in out.stdout
    assert "is not allowed to import django" in out.stdout  # ... and through selectors, Django
    assert "apps.market.selectors -> django" in out.stdout


def test_given_market_code_naming_a_bot_when_linting_then_the_layers_contract_fails(tmp_path):
    root = _copy_tree(tmp_path)
    timeframes = root / "apps" / "market" / "timeframes.py"
    timeframes.write_text(timeframes.read_text() + "\nfrom apps.bots.strategies import base  # noqa\n")
    out = _lint(root)
    assert out.returncode == 1
    assert "apps.market is not allowed to import apps.bots" in out.stdout
    assert "apps.market.timeframes -> apps.bots.strategies.base" in out.stdout
