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


@shared_task(bind=True, acks_late=True)
def run_backtest_task(self, run_id: int) -> dict:
    try:
        run = services.execute_run(run_id)
    except SoftTimeLimitExceeded:
        message = soft_time_limit_message(self)
        logger.error("backtest run %s: %s", run_id, message)
        services.fail_run(run_id, message)
        raise SoftTimeLimitExceeded(f"backtest run {run_id} {message}") from None
    return {"run_id": run.pk, "status": run.status}


@shared_task(bind=True, acks_late=True)
def run_walkforward_task(self, walkforward_id: int) -> dict:
    """A stored walk-forward study (services.create_walkforward enqueued it on commit), computed on this worker."""
    try:
        study = services.execute_walkforward(walkforward_id)
    except SoftTimeLimitExceeded:
        message = soft_time_limit_message(self)
        logger.error("walk-forward %s: %s", walkforward_id, message)
        services.fail_walkforward(walkforward_id, message)
        raise SoftTimeLimitExceeded(f"walk-forward {walkforward_id} {message}") from None
    return {"walkforward_id": study.pk, "status": study.status, "windows": len(study.windows)}


@shared_task(acks_late=True)
def dispatch_sweep_task(sweep_id: int) -> int:
    """Fan a stored sweep out into its chunk tasks (done here, not in the web request that created it)."""
    services.dispatch_stored_sweep(sweep_id)
    return sweep_id


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT_ERRORS, max_retries=3,
             retry_backoff=1, retry_backoff_max=10, retry_jitter=False)
def sweep_chunk_task(self, sweep_id: int, chunk_index: int, param_sets: list) -> dict:
    try:
        summary = services.execute_sweep_chunk(sweep_id, chunk_index, param_sets)
    except SoftTimeLimitExceeded:
        message = f"chunk {chunk_index} {soft_time_limit_message(self)}"
        logger.error("sweep %s: %s", sweep_id, message)
        services.fail_sweep(sweep_id, message)
        raise SoftTimeLimitExceeded(message) from None  # the chord's error callback keeps the sweep failed
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


@shared_task(acks_late=True)
def fail_run_task(request=None, exc=None, traceback=None, run_id: int | None = None) -> None:
    """Error callback of run_backtest_task: a run the task could not mark itself (hard time limit) is marked failed;
    a run that already recorded its failure keeps its reason."""
    if run_id is None:
        return
    services.fail_run(run_id, failure_message(exc), keep_reason=True)


@shared_task(acks_late=True)
def fail_walkforward_task(request=None, exc=None, traceback=None, walkforward_id: int | None = None) -> None:
    """Error callback of run_walkforward_task: a study killed at the hard time limit is marked failed; one that
    recorded its own failure keeps its reason."""
    if walkforward_id is None:
        return
    services.fail_walkforward(walkforward_id, failure_message(exc), keep_reason=True)


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
