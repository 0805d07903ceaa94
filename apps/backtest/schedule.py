"""Beat schedule of the backtest app (picked up by `manage.py setup_periodic_tasks`)."""

PERIODIC_TASKS = [
    {
        "name": "backtest: recover stalled sweeps",
        "task": "apps.backtest.tasks.recover_sweeps_task",
        "interval": (1, "minutes"),
        "queue": "backtest",
        "expire_seconds": 55,
        "description": "Every minute: a running sweep with no progress for TRADEBOT_SWEEP_STALL_S gets its missing "
                       "parameter sets sent again (each counted once); failed after 3 re-dispatches.",
    },
]
