"""Beat schedule of the bots app (picked up by `manage.py setup_periodic_tasks`)."""

PERIODIC_TASKS = [
    {
        "name": "bots: monitor (restart failed or silent bots, at most 3 per hour)",
        "task": "apps.bots.tasks.monitor_bots_task",
        "interval": (1, "minutes"),
        "queue": "bots",
        "expire_seconds": 55,
        "description": "Every minute: restart failed or silent running bots; give up after 3 restarts in an hour.",
    },
]
