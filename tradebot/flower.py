"""Start Flower safely: `python -m tradebot.flower` (used by `make flower`, `make up` and the Procfile).

* Refuses to start without `FLOWER_BASIC_AUTH=user:password` (both parts non-empty): Flower shows task arguments
  and can revoke tasks, so it never runs open.
* Binds `FLOWER_ADDRESS` (default 127.0.0.1: reachable from this machine only) and `FLOWER_PORT` (default 5555).
* Puts `/metrics` behind the same basic auth (Flower serves its Prometheus metrics unauthenticated).
"""

from __future__ import annotations

import os
import sys


class FlowerConfigError(SystemExit):
    pass


def flower_argv(environ: dict[str, str]) -> list[str]:
    auth = environ.get("FLOWER_BASIC_AUTH", "")
    user, _, password = auth.partition(":")
    if not user or not password:
        raise FlowerConfigError("flower: set FLOWER_BASIC_AUTH=user:password (refusing to start without auth)")
    address = environ.get("FLOWER_ADDRESS", "127.0.0.1")
    port = environ.get("FLOWER_PORT", "5555")
    if not port.isdigit():
        raise FlowerConfigError(f"flower: FLOWER_PORT must be a port number, got {port!r}")
    return ["flower", f"--address={address}", f"--port={port}", f"--basic-auth={auth}"]


def protect_metrics() -> None:
    import tornado.web
    from flower.views.monitor import Metrics

    Metrics.get = tornado.web.authenticated(Metrics.get)


def main() -> None:
    try:
        argv = flower_argv(dict(os.environ))
    except FlowerConfigError as exc:
        print(exc.code, file=sys.stderr)
        raise SystemExit(2) from None
    protect_metrics()
    from tradebot.celery import app

    app.start(argv)


if __name__ == "__main__":
    main()
