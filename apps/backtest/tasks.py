"""Backtest tasks on the `backtest` queue (thin: the services load, compute and store). Late acks everywhere.

A walk-forward study is one task (run_walkforward_task: its windows feed one stitched account) with the same limits
and error callback as a run. A sweep is `chord(group(sweep_chunk_task per chunk), finish_sweep_task)`; a chunk
failing on a transient database or broker error is retried (bounded); its stores are idempotent (unique (sweep,
index)), so a retry never double counts.

Time limits: the `backtest` queue's soft / hard limits (TRADEBOT_BACKTEST_SOFT_TIME_LIMIT / _TIME_LIMIT, applied by
the worker, tradebot/celery.py). A run or a sweep chunk reaching the soft limit is marked failed with the reason
("exceeded the soft time limit of N s") and the task fails; a sweep's chord then never ranks. A task killed at the
hard limit cannot record anything itself: the run's error callback (fail_run_task) and the sweep's chord error
callback (fail_sweep_task) mark it failed ("exceeded the hard time limit of N s").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from apps.backtest import services

logger = logging.getLogger(__name__)

# The database or Redis (broker, results, pub/sub) briefly away: retry. redis-py's errors are not the builtins.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, ConnectionError, TimeoutError, BrokerError,
                    RedisConnectionError, RedisTimeoutError)


def soft_time_limit_message(task) -> str:
    """'exceeded the soft time limit of N s', N from the message (if the sender set one) or the worker's task."""
    timelimit = getattr(task.request, "timelimit", None) or (None, None)
    soft = timelimit[1] if len(timelimit) > 1 and timelimit[1] else task.soft_time_limit
    return f"exceeded the soft time limit of {soft:g} s" if soft else "exceeded the soft time limit"


@contextmanager
def failed_at_soft_limit(task, label: str, fail: Callable[[str], None], *, part: str = "") -> Iterator[None]:
    """A task body reaching the soft time limit: its row is marked failed with the reason (`fail(reason)`, `part`
    naming the piece, e.g. "chunk 3 ") and the task fails, named by `label` ("backtest run 7")."""
    try:
        yield
    except SoftTimeLimitExceeded:
        reason = part + soft_time_limit_message(task)
        logger.error("%s: %s", label, reason)
        fail(reason)
        raise SoftTimeLimitExceeded(f"{label} {reason}") from None


@shared_task(bind=True, acks_late=True)
def run_backtest_task(self, run_id: int) -> dict:
    with failed_at_soft_limit(self, f"backtest run {run_id}", lambda reason: services.fail_run(run_id, reason)):
        run = services.execute_run(run_id)
    return {"run_id": run.pk, "status": run.status}


@shared_task(bind=True, acks_late=True)
def run_walkforward_task(self, walkforward_id: int) -> dict:
    """A stored walk-forward study (services.create_walkforward enqueued it on commit), computed on this worker."""
    with failed_at_soft_limit(self, f"walk-forward {walkforward_id}",
                              lambda reason: services.fail_walkforward(walkforward_id, reason)):
        study = services.execute_walkforward(walkforward_id)
    return {"walkforward_id": study.pk, "status": study.status, "windows": len(study.windows)}


@shared_task(acks_late=True)
def dispatch_sweep_task(sweep_id: int) -> int:
    """Fan a stored sweep out into its chunk tasks (done here, not in the web request that created it)."""
    services.dispatch_stored_sweep(sweep_id)
    return sweep_id


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT_ERRORS, max_retries=3,
             retry_backoff=1, retry_backoff_max=10, retry_jitter=False)
def sweep_chunk_task(self, sweep_id: int, chunk_index: int, param_sets: list) -> dict:
    # the chord's error callback then keeps the sweep failed with the chunk's reason
    with failed_at_soft_limit(self, f"sweep {sweep_id}", lambda reason: services.fail_sweep(sweep_id, reason),
                              part=f"chunk {chunk_index} "):
        summary = services.execute_sweep_chunk(sweep_id, chunk_index, param_sets)
    summary["retries"] = self.request.retries
    return summary


@shared_task(acks_late=True)
def finish_sweep_task(results: list, sweep_id: int) -> dict:
    sweep = services.finish_sweep(sweep_id, results)
    compute = sum(float(r.get("compute_seconds", 0.0)) for r in results or [] if isinstance(r, dict))
    return {"sweep_id": sweep.pk, "status": sweep.status, "completed": sweep.completed, "failed": sweep.failed,
            "compute_seconds": compute, "chunks": results}


@shared_task(acks_late=True, ignore_result=True)
def recover_sweeps_task() -> dict:
    """Beat entry point: re-dispatch the missing chunks of sweeps that stopped progressing (see the service)."""
    return services.recover_stalled_sweeps()


def failure_message(exc: BaseException | None) -> str:
    if isinstance(exc, TimeLimitExceeded):
        limit = exc.args[0] if exc.args else None
        try:
            return f"exceeded the hard time limit of {float(limit):g} s (the worker killed the task)"
        except (TypeError, ValueError):
            return "exceeded the hard time limit (the worker killed the task)"
    return f"{type(exc).__name__}: {exc}" if exc is not None else "the task failed"


def mark_failed(fail: Callable[..., None], row_id: int | None, exc: BaseException | None) -> None:
    """An error callback's work: a row its task could not mark itself (killed at the hard time limit) is marked
    failed; a row that already recorded its failure (e.g. the soft limit) keeps its reason."""
    if row_id is not None:
        fail(row_id, failure_message(exc), keep_reason=True)


@shared_task(acks_late=True)
def fail_run_task(request=None, exc=None, traceback=None, run_id: int | None = None) -> None:
    """Error callback of run_backtest_task (see mark_failed)."""
    mark_failed(services.fail_run, run_id, exc)


@shared_task(acks_late=True)
def fail_walkforward_task(request=None, exc=None, traceback=None, walkforward_id: int | None = None) -> None:
    """Error callback of run_walkforward_task (see mark_failed)."""
    mark_failed(services.fail_walkforward, walkforward_id, exc)


@shared_task(acks_late=True)
def fail_sweep_task(request=None, exc=None, traceback=None, sweep_id: int | None = None) -> None:
    """Chord error callback: a chunk failed for good (retries exhausted), so the sweep is marked failed."""
    if sweep_id is None:
        return
    message = f"a chunk failed: {failure_message(exc)}" if exc is not None else "a chunk failed"
    logger.error("sweep %s: %s", sweep_id, message)
    services.fail_sweep(sweep_id, message)


@shared_task(acks_late=True, autoretry_for=TRANSIENT_ERRORS, max_retries=3, retry_backoff=1, retry_backoff_max=10,
             retry_jitter=False)
def optimize_trial_task(trial_id: int) -> dict:
    """Evaluate one Optuna trial row (idempotent: a finished row is left as it is, so redelivery is harmless)."""
    from apps.backtest.optimize import evaluate_trial

    trial = evaluate_trial(trial_id)
    return {"trial_id": trial_id, "state": getattr(trial, "state", None)}
