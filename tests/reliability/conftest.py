"""Reliability suite: every test injects faults into real processes and reports what happened.

Each test takes the `figures` fixture and fills in how many faults it injected, how many decisions (ticks, candles,
parameter sets, runs, beat slots...) the system made, and how many were lost or doubled (both must be 0; the test
asserts it). A session fixture writes them all to `var/reliability/report.json` (linked from the README).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
REPORT_PATH = ROOT / "var" / "reliability" / "report.json"
_RESULTS: list[dict[str, Any]] = []


@dataclass
class Figures:
    test: str
    fault: str = ""
    faults_injected: int = 0
    decisions: int = 0
    lost: int = 0
    doubled: int = 0
    checks: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    outcome: str = "unknown"
    seconds: float = 0.0

    def check(self, text: str) -> None:
        """A sentence saying what was verified (goes into the report)."""
        self.checks.append(text)

    def assert_nothing_lost_or_doubled(self) -> None:
        assert self.lost == 0, f"{self.lost} lost ({self.fault})"
        assert self.doubled == 0, f"{self.doubled} doubled ({self.fault})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.reliability_outcome = rep.outcome


@pytest.fixture(scope="session", autouse=True)
def reliability_report():
    """Writes the figures of every reliability test that ran to var/reliability/report.json at session end."""
    started = time.time()
    yield
    if not _RESULTS:
        return
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    totals = {k: sum(r[k] for r in _RESULTS) for k in ("faults_injected", "decisions", "lost", "doubled")}
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "wall_seconds": round(time.time() - started, 1),
        "tests": len(_RESULTS),
        "passed": sum(1 for r in _RESULTS if r["outcome"] == "passed"),
        "totals": totals,
        "results": sorted(_RESULTS, key=lambda r: r["test"]),
    }
    REPORT_PATH.write_text(json.dumps(_plain(report), indent=2, default=str) + "\n")


def _plain(value):
    """JSON-safe: mapping keys become strings, tuples lists."""
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, tuple) else " ".join(map(str, k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@pytest.fixture
def figures(request):
    rec = Figures(test=request.node.nodeid.split("tests/reliability/", 1)[-1])
    t0 = time.monotonic()
    yield rec
    rec.seconds = round(time.monotonic() - t0, 2)
    rec.outcome = getattr(request.node, "reliability_outcome", "error")
    _RESULTS.append(asdict(rec))
