"""Settings shared by every role. Everything that differs between machines comes from the environment.

No DATABASE_URL / REDIS_URL -> the *embedded default*: a SQLite file, Celery tasks run in-process (eager) and
pub/sub notifications delivered in-process. That is what `make demo` uses.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-insecure-key-set-DJANGO_SECRET_KEY-in-production")
DEBUG = env_bool("DJANGO_DEBUG", True)
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,testserver").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_celery_beat",
    "apps.market",
    "apps.bots",
    "apps.backtest",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tradebot.urls"
WSGI_APPLICATION = "tradebot.wsgi.application"
ASGI_APPLICATION = "tradebot.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database ---------------------------------------------------------------------------------------------------
DATA_DIR = Path(os.environ.get("TRADEBOT_DATA_DIR", BASE_DIR / "var"))
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "tradebot.sqlite3",
            # WAL + a busy timeout so the web process and an eager "worker" in another process do not trip over locks.
            "OPTIONS": {"timeout": 30, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"

# --- redis / celery / notifications -----------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", REDIS_URL or "cache+memory://")
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# "redis" publishes on Redis pub/sub; "inprocess" delivers to subscribers in this process (embedded default).
NOTIFY_BACKEND = os.environ.get("NOTIFY_BACKEND", "redis" if REDIS_URL else "inprocess")

# --- application ------------------------------------------------------------------------------------------------
# Extra strategies by dotted path ("package.module.ClassName"), registered at start-up without touching the package.
TRADEBOT_STRATEGIES = [s for s in os.environ.get("TRADEBOT_STRATEGIES", "").split(",") if s]
TRADEBOT_BOT_CONFIG_DIR = Path(os.environ.get("TRADEBOT_BOT_CONFIG_DIR", BASE_DIR / "config" / "bots"))
# Default fee rate per fill (0.1 % of notional) used by bots and backtests unless a run says otherwise.
TRADEBOT_DEFAULT_FEE = float(os.environ.get("TRADEBOT_DEFAULT_FEE", "0.001"))
# How many candles a collection round asks an exchange for per page.
TRADEBOT_FETCH_LIMIT = int(os.environ.get("TRADEBOT_FETCH_LIMIT", "1000"))
# Partitions of raw_trades created ahead of the current month.
TRADEBOT_RAW_TRADES_MONTHS_AHEAD = int(os.environ.get("TRADEBOT_RAW_TRADES_MONTHS_AHEAD", "3"))

# --- API --------------------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "EXCEPTION_HANDLER": "tradebot.api.exception_handlers.exception_handler_with_fields",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "tradebot API",
    "DESCRIPTION": "Market data, bots and backtests. Candle timestamps are close times in ms UTC.",
    "VERSION": "0.1.0",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    "loggers": {
        "apps": {"level": os.environ.get("LOG_LEVEL", "INFO")},
        # kombu warns that the in-memory transport has no hostname on every eager chord: noise on the embedded default
        "kombu.connection": {"level": "ERROR"},
    },
}
