"""The worker's consumer (`worker_consumer` in tradebot.celery): Celery's own, minus one crash on a broker restart.

Celery 5.7.0's `Consumer.on_connection_error_after_connected` first `collect()`s the lost connection (which closes
it and drops its transport) and then closes it a second time. On Redis the second close re-enters the channel that
the first one could not finish (it was in a BRPOP on the dead socket) and asks a connection with no transport for
its host: `AttributeError: 'NoneType' object has no attribute 'hostname'` escapes `ignore_errors`, the worker logs
"Unrecoverable error" and stops consuming, so a chord callback queued meanwhile was never run
(tests/reliability/test_redis_restart.py, 2 failures in 3 runs under CPU load). Celery 5.6 only collected; this
consumer does the same by skipping the second close of a connection that collect() already released.
"""

from __future__ import annotations

from celery.worker.consumer import Consumer as CeleryConsumer


class Consumer(CeleryConsumer):
    def on_connection_error_after_connected(self, exc):
        connection = self.connection
        if connection is not None:
            close = connection.close

            def close_unless_collected():
                if connection._transport is not None:  # collect() sets it to None once it released everything
                    close()

            connection.close = close_unless_collected
        return super().on_connection_error_after_connected(exc)
