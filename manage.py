#!/usr/bin/env python
import os
import sys


def main() -> None:
    # The developer profile unless told otherwise; wsgi, asgi and the Celery app default to production instead.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradebot.settings.local")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
