"""The developer profile: DEBUG on, the dev secret key allowed. manage.py's default, used by `make demo` and `make run`.

With nothing set it is the embedded default (SQLite file under var/, eager Celery, in-process notifications); set
DATABASE_URL / REDIS_URL to develop against real services.
"""

from .base import *  # noqa: F403
from .env import env_bool

DEBUG = env_bool("DJANGO_DEBUG", True)
