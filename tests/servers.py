"""Live servers for tests: gunicorn (the production web server) on 127.0.0.1 and an ephemeral port, as a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


@contextmanager
def gunicorn_server(*, env: dict[str, str] | None = None, workers: int = 2, threads: int = 1, timeout: float = 60):
    """Yield the base URL of gunicorn serving tradebot.wsgi; its settings and database come from `env`."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        [GUNICORN, "tradebot.wsgi", "--bind", "127.0.0.1:0", "--workers", str(workers), "--threads", str(threads),
         "--log-level", "info", "--timeout", "120"],
        cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                if proc.poll() is not None:
                    break
                continue
            lines.append(line)
            m = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", line)
            if m:
                url = m.group(1)
            if url and "Booting worker" in line:
                break
        if url is None:
            raise RuntimeError("gunicorn did not start:\n" + "".join(lines[-30:]))
        # keep draining stderr so the server never blocks on a full pipe
        import threading

        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
