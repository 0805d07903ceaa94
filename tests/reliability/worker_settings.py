"""Settings of the worker processes the reliability suite kills: the test settings plus a short broker visibility
timeout, so a message held by a worker that died whole (SIGKILL of the main process, a lost machine) is handed to
another worker after seconds instead of the default hour. Production keeps the default (see README: a dead worker's
unacked messages come back after CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"])."""

from tradebot.settings.test import *  # noqa: F403

CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 4, "unacked_restore_interval": 1,
                                   "unacked_restore_throttle": 1}
