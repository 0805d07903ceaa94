"""Mutation check of the reliability guards: remove each guard, run its test, expect it to FAIL, restore the file.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python scripts/check_guards.py [name ...]

Each mutation is an exact text replacement in one source file (the script stops if the text is not found, i.e. the
guard moved); the original file is always written back. Prints one JSON line per guard and exits 1 if any test still
passed without its guard. Not part of `make test` (it runs the guarded tests once per mutation).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
T = "tests/reliability/test_guards.py::"
EXCHANGE = "tests/reliability/test_exchange_faults.py"

MUTATIONS = {
    "worker-start resume": ("apps/bots/tasks.py", "    services.resume_running_bots()", "    pass",
                            T + "test_given_running_bots_behind_when_a_real_worker_starts_then_they_catch_up_and_"
                                "stopped_bots_stay"),
    "chord error callback": ("apps/backtest/services.py",
                             "body = finish_sweep_task.s(sweep_id).on_error(fail_sweep_task.s(sweep_id=sweep_id))",
                             "body = finish_sweep_task.s(sweep_id)",
                             T + "test_given_a_chunk_that_always_fails_transiently_when_retries_run_out_then_the_"
                                 "sweep_is_failed_with_the_reason"),
    "redelivered finished run skipped": ("apps/backtest/services.py", "    if run.status == Status.DONE:\n",
                                         "    if False:\n",
                                         T + "test_given_a_finished_run_when_its_task_is_delivered_again_then_it_is_"
                                             "not_computed_or_stored_twice"),
    "bot tick row lock": ("apps/bots/services.py",
                          '    lock = "FOR UPDATE" if wait else "FOR UPDATE SKIP LOCKED"\n',
                          '    lock = ""\n',
                          T + "test_given_two_workers_ticking_one_bot_at_once_then_each_candle_is_decided_once"),
    "per-market ingest lock": ("apps/market/services.py",
                               "        Market.objects.select_for_update().filter(pk=market.pk).first()\n", "",
                               T + "test_given_two_adjacent_pages_ingested_concurrently_then_the_ledger_covers_both_"
                                   "as_one_run"),
    # refresh_ledger takes the same Market row lock after the upsert, so removing only the ingest lock is not
    # observable (the ledger is still serialised); removing both is.
    "per-market ingest lock + the ledger's own lock": (
        [("apps/market/services.py", "        Market.objects.select_for_update().filter(pk=market.pk).first()\n", ""),
         ("apps/market/ledger.py", "    Market.objects.select_for_update().filter(pk=market.pk).first()\n", "")],
        None, None,
        T + "test_given_two_adjacent_pages_ingested_concurrently_then_the_ledger_covers_both_as_one_run"),
    "market tasks retry on lost DB connections": (
        "apps/market/tasks.py", '"autoretry_for": (ccxt.NetworkError, OperationalError, InterfaceError),',
        '"autoretry_for": (ccxt.NetworkError,),',
        "tests/reliability/test_data_faults.py::test_given_the_worker_connection_terminated_mid_ingest_then_rolled_"
        "back_retried_and_stored_once"),
    "partition-creation lock": ("apps/market/partitions.py",
                                '        cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])\n', "",
                                T + "test_given_two_sessions_creating_the_same_partitions_then_each_is_created_once_"
                                    "without_error"),
    "failed run marked FAILED": ("apps/backtest/services.py",
                                 "except Exception as exc:  # noqa: BLE001 - any failure is recorded",
                                 "except ZeroDivisionError as exc:  # noqa: BLE001 - any failure is recorded",
                                 T + "test_given_a_run_with_no_candles_when_a_worker_runs_it_then_failed_with_the_"
                                     "reason_and_the_worker_goes_on"),
    "failed walk-forward marked FAILED": ("apps/backtest/services.py",
                                          "except Exception as exc:  # noqa: BLE001 - recorded on the row",
                                          "except ZeroDivisionError as exc:  # noqa: BLE001 - recorded on the row",
                                          T + "test_given_a_walkforward_with_no_candles_then_it_is_stored_failed_with_"
                                              "the_reason"),
    "publish failure logged": ("tradebot/notify.py",
                               "except Exception:  # noqa: BLE001 - notifications must never break",
                               "except ZeroDivisionError:  # noqa: BLE001 - notifications must never break",
                               T + "test_given_redis_down_when_new_candles_are_ingested_then_stored_and_the_publish_"
                                   "failure_is_logged"),
    "collect --market per-market except": ("apps/market/management/commands/collect.py",
                                           "except Exception as exc:  # noqa: BLE001 - reported per market",
                                           "except ZeroDivisionError as exc:  # noqa: BLE001 - reported per market",
                                           T + "test_given_a_failing_market_first_when_collect_market_runs_then_the_"
                                               "others_are_collected_and_exit_is_1"),
    "monitor re-checks under the row lock": (
        "apps/bots/services.py",
        "            if bot.status != Bot.Status.RUNNING or not (bot.failed_at is not None or _silent(bot, now_ms)):\n"
        "                continue\n",
        "",
        "tests/reliability/test_monitor_recheck.py"),
    "backfill keeps a gap of rejected candles open": (
        "apps/market/collector.py", "        if rejected:\n            # The exchange has these candles but sent",
        "        if False:\n            # The exchange has these candles but sent", EXCHANGE),
    "garbage exchange answers refused": (
        "apps/market/providers/ccxt.py", "    if isinstance(body, str | bytes) and body:\n",
        "    if False:\n", EXCHANGE),
    "stalled sweeps re-dispatched": (
        "apps/backtest/services.py",
        "                transaction.on_commit(lambda pk=sweep_id, c=chunks: _send_chord(pk, c))\n", "",
        "tests/reliability/test_sweep_recovery.py"),
    "a refused write isolated to its bot": (
        "apps/bots/services.py", "    if not code or any(code.startswith(p) for p in _RETRIED_SQLSTATES):\n",
        "    if True:\n",
        "tests/reliability/test_data_faults.py::test_given_signal_writes_failing_for_one_bot_then_the_error_is_on_that_"
        "bot_the_others_go_on_and_it_recovers"),
    "SSE per-client buffer bounded": (
        "tradebot/dashboard/live.py", "    buffer: queue.Queue = queue.Queue(maxsize=max_buffer)\n",
        "    buffer: queue.Queue = queue.Queue()\n", "tests/reliability/test_slow_dashboard_client.py"),
}


def check(name: str) -> dict:
    first, old, new, test = MUTATIONS[name]
    edits = first if isinstance(first, list) else [(first, old, new)]
    originals: dict[Path, str] = {}
    try:
        for rel, old, new in edits:
            path = ROOT / rel
            text = originals.setdefault(path, path.read_text())
            current = path.read_text()
            if current.count(old) != 1:
                return {"guard": name, "file": rel, "result": "guard text not found exactly once (moved?)"}
            path.write_text(current.replace(old, new))
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="tradebot.settings.test")
        proc = subprocess.run([str(ROOT / ".venv/bin/pytest"), test, "-q", "-x"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
    finally:
        for path, text in originals.items():
            path.write_text(text)
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    files = ", ".join(sorted({rel for rel, _, _ in edits}))
    return {"guard": name, "file": files, "test_failed_without_guard": proc.returncode != 0, "pytest": tail}


def main() -> int:
    names = sys.argv[1:] or list(MUTATIONS)
    ok = True
    for name in names:
        row = check(name)
        ok &= bool(row.get("test_failed_without_guard"))
        print(json.dumps(row), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
