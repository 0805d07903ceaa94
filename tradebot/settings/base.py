"""Settings shared by every role. Everything that differs between machines comes from the environment.

Profiles (DJANGO_SETTINGS_MODULE): `tradebot.settings.local` (developer: DEBUG on; manage.py's default),
`tradebot.settings.production` (wsgi/asgi, the Celery app and the Procfile's default: secrets required, hardened),
`tradebot.settings.test` (the suite: PostgreSQL + Redis). This module is their common base; DEBUG is off here.

No DATABASE_URL / REDIS_URL -> the *embedded default*: a SQLite file, Celery tasks run in-process (eager) and
pub/sub notifications delivered in-process. That is what `make demo` uses.

Environment values are parsed strictly (tradebot.settings.env): a malformed boolean or number stops start-up with an
ImproperlyConfigured naming the variable. The README lists every variable.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_float, env_int, env_json, env_list, env_path, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent

#: The developer key: accepted by base/local/test, refused by production.
DEV_SECRET_KEY = "dev-only-insecure-key-set-DJANGO_SECRET_KEY-in-production"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", DEV_SECRET_KEY)
# Off unless a profile (local) or DJANGO_DEBUG=1 turns it on.
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "apps.market",
    "apps.bots",
    "apps.backtest",
    "tradebot",  # project-level commands (demo) that drive market, bots and backtest together
]

MIDDLEWARE = [
    "tradebot.middleware.RequestLimitsMiddleware",  # 413/414 from the headers, before anything reads the request
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files (docs UI, plotly.js) from gunicorn too, no CDN
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "tradebot.api.views.SingleValuedQueryMiddleware",
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
                "tradebot.context_processors.links",
            ],
        },
    },
]

# --- database ---------------------------------------------------------------------------------------------------
# Where the embedded SQLite file, static files and demo reports go.
DATA_DIR = TRADEBOT_DATA_DIR = env_path("TRADEBOT_DATA_DIR", BASE_DIR / "var")
DATABASE_URL = env_str("DATABASE_URL", "")
if DATABASE_URL:
    try:
        DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DJANGO_CONN_MAX_AGE", 60,
                                                                                          minimum=0))}
    except ValueError as exc:
        raise ImproperlyConfigured(f"environment variable DATABASE_URL is not a database URL ({exc})") from None
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
# plotly.js comes from the installed plotly package (/static/plotly/plotly.min.js): the dashboard works offline.
STATICFILES_DIRS = [("plotly", Path(__import__("plotly").__file__).parent / "package_data")]
WHITENOISE_USE_FINDERS = True  # serve straight from the apps' and packages' static dirs, collectstatic optional

# --- redis / celery / notifications -----------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", REDIS_URL or "cache+memory://")
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TIMEZONE = "UTC"
# DatabaseScheduler + one send per (entry, slot) across beat processes: two beats or a restarted beat never send a
# periodic task twice for one slot (tradebot/beat.py).
CELERY_BEAT_SCHEDULER = "tradebot.beat:SlotLockedScheduler"
# Seconds before a task a dead worker had taken (late ack, never acked) is handed to another worker (Redis broker).
TRADEBOT_BROKER_VISIBILITY_TIMEOUT = env_int("TRADEBOT_BROKER_VISIBILITY_TIMEOUT", 3600, minimum=1)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": TRADEBOT_BROKER_VISIBILITY_TIMEOUT}
# "redis" publishes on Redis pub/sub; "inprocess" delivers to subscribers in this process (embedded default).
NOTIFY_BACKEND = env_str("NOTIFY_BACKEND", "redis" if REDIS_URL else "inprocess")
if NOTIFY_BACKEND not in ("redis", "inprocess"):
    raise ImproperlyConfigured(f"environment variable NOTIFY_BACKEND={NOTIFY_BACKEND!r} is not 'redis' or 'inprocess'")

# Celery time limits per queue, in seconds (tradebot/celery.py applies them to every task routed to the queue). At the
# soft limit the task gets SoftTimeLimitExceeded (backtest runs and sweep chunks record "exceeded the soft time limit
# of N s" on the run / sweep); at the hard limit the worker kills the process running it. Eager tasks have no limit.
TRADEBOT_MARKET_SOFT_TIME_LIMIT = env_float("TRADEBOT_MARKET_SOFT_TIME_LIMIT", 540.0, minimum=0.001)
TRADEBOT_MARKET_TIME_LIMIT = env_float("TRADEBOT_MARKET_TIME_LIMIT", 600.0, minimum=0.001)
TRADEBOT_COLLECT_SOFT_TIME_LIMIT = env_float("TRADEBOT_COLLECT_SOFT_TIME_LIMIT", 540.0, minimum=0.001)
TRADEBOT_COLLECT_TIME_LIMIT = env_float("TRADEBOT_COLLECT_TIME_LIMIT", 600.0, minimum=0.001)
TRADEBOT_BOTS_SOFT_TIME_LIMIT = env_float("TRADEBOT_BOTS_SOFT_TIME_LIMIT", 240.0, minimum=0.001)
TRADEBOT_BOTS_TIME_LIMIT = env_float("TRADEBOT_BOTS_TIME_LIMIT", 300.0, minimum=0.001)
TRADEBOT_BACKTEST_SOFT_TIME_LIMIT = env_float("TRADEBOT_BACKTEST_SOFT_TIME_LIMIT", 3600.0, minimum=0.001)
TRADEBOT_BACKTEST_TIME_LIMIT = env_float("TRADEBOT_BACKTEST_TIME_LIMIT", 3900.0, minimum=0.001)
# A running sweep with no chunk stored for this long (s) lost a chunk for good: the beat sends its missing parameter
# sets again (apps.backtest.services.recover_stalled_sweeps). Above the hard limit, so a slow chunk is not redone.
TRADEBOT_SWEEP_STALL_S = env_float("TRADEBOT_SWEEP_STALL_S", TRADEBOT_BACKTEST_TIME_LIMIT + 600.0, minimum=0.001)
for _queue in ("MARKET", "COLLECT", "BOTS", "BACKTEST"):
    if globals()[f"TRADEBOT_{_queue}_SOFT_TIME_LIMIT"] >= globals()[f"TRADEBOT_{_queue}_TIME_LIMIT"]:
        raise ImproperlyConfigured(
            f"TRADEBOT_{_queue}_SOFT_TIME_LIMIT={globals()[f'TRADEBOT_{_queue}_SOFT_TIME_LIMIT']:g} must be below "
            f"TRADEBOT_{_queue}_TIME_LIMIT={globals()[f'TRADEBOT_{_queue}_TIME_LIMIT']:g} (the hard limit)")

# --- application ------------------------------------------------------------------------------------------------
# Extra strategies by dotted path ("package.module.ClassName"), registered at start-up without touching the package.
TRADEBOT_STRATEGIES = env_list("TRADEBOT_STRATEGIES")
# A folder whose *.py files are user strategies (every named BaseStrategy subclass in them is registered).
TRADEBOT_STRATEGIES_DIR = env_path("TRADEBOT_STRATEGIES_DIR", BASE_DIR / "strategies")
# Folder of bot configs (*.json) that config sync reads.
TRADEBOT_BOT_CONFIG_DIR = env_path("TRADEBOT_BOT_CONFIG_DIR", BASE_DIR / "config" / "bots")
# Default fee rate per fill (0.1 % of notional): the fee of a new bot (model, JSON config) and of a backtest / sweep
# unless it says otherwise.
TRADEBOT_DEFAULT_FEE = env_float("TRADEBOT_DEFAULT_FEE", 0.001, minimum=0.0, below=1.0)
# Bots per fleet-tick task (one Celery task per shard of a market's running bots, queue `bots`): small enough that a
# market's fleet spreads over every worker process, large enough that per-task overhead (message, transaction, one
# window read, one statement per table) stays small next to the work. Chosen by bench/bots.py (10,000 bots on one
# worker of 2 processes, three runs on 2026-12-02): 250: 3.2 / 4.3 / 2.5 s, 500: 2.5 / 3.1 / 1.8 s,
# 1000: 1.7 / 3.1 / 1.4 s, 2500: 1.7 / 1.7 / 1.8 s (as fast at the median, and steady). Smaller shards pay off with
# more worker processes than this machine's 2 cores.
TRADEBOT_TICK_SHARD_SIZE = env_int("TRADEBOT_TICK_SHARD_SIZE", 2500, minimum=1)
# How many candles a collection round asks an exchange for per page (also the replay provider's page size).
TRADEBOT_FETCH_LIMIT = env_int("TRADEBOT_FETCH_LIMIT", 1000, minimum=1)
# Each exchange request: tries before the error goes to the caller (the market backs off, a backfill task retries),
# the first back-off (seconds, doubling up to 60), and ccxt's timeout (ms; unset = ccxt's default of 10 s).
TRADEBOT_FETCH_ATTEMPTS = env_int("TRADEBOT_FETCH_ATTEMPTS", 5, minimum=1)
TRADEBOT_FETCH_BACKOFF_S = env_float("TRADEBOT_FETCH_BACKOFF_S", 1.0, minimum=0.0)
TRADEBOT_EXCHANGE_TIMEOUT_MS = env_int("TRADEBOT_EXCHANGE_TIMEOUT_MS", None, minimum=100)
# Partitions of raw_trades created ahead of the current month.
TRADEBOT_RAW_TRADES_MONTHS_AHEAD = env_int("TRADEBOT_RAW_TRADES_MONTHS_AHEAD", 3, minimum=0)
# Replay provider: the exchange name whose stored candles are re-emitted as a live feed ...
TRADEBOT_REPLAY_SOURCE = env_str("TRADEBOT_REPLAY_SOURCE", "binance")
# ... and how many candles each collection round replays (unset = all that are newer than the target's newest).
TRADEBOT_REPLAY_STEP = env_int("TRADEBOT_REPLAY_STEP", None, minimum=1)
# Byte budget (MiB) of the process-wide indicator cache of sweeps. The pure sweep engine reads the variable itself
# (it imports no Django); it is declared here so a malformed value fails at start-up with the variable's name.
TRADEBOT_INDICATOR_CACHE_MB = env_float("TRADEBOT_INDICATOR_CACHE_MB", 256.0, minimum=0.0)

# Replace the scheme/host/port of an exchange's ccxt / ccxt.pro API URLs (paths kept), e.g. to run against a local
# fake or a mirror: JSON {"binance": {"ws": "ws://127.0.0.1:9000", "rest": "http://127.0.0.1:9000"}}.
TRADEBOT_EXCHANGE_URLS = env_json("TRADEBOT_EXCHANGE_URLS", {})
if not isinstance(TRADEBOT_EXCHANGE_URLS, dict) or not all(
    isinstance(v, dict) for v in TRADEBOT_EXCHANGE_URLS.values()
):
    raise ImproperlyConfigured('TRADEBOT_EXCHANGE_URLS must be a JSON object {"exchange": {"ws": ..., "rest": ...}}')
# Stream role (manage.py stream): a 1m candle closes when a trade at/after its close arrives or the clock passes
# close + this grace (ms); a market silent for longer than its Market.stream_timeout is treated as dropped.
TRADEBOT_STREAM_GRACE_MS = env_int("TRADEBOT_STREAM_GRACE_MS", 250, minimum=0)
# Lease of a market to one stream process (Redis, fenced): time to live and renewal period (ms).
TRADEBOT_STREAM_LEASE_MS = env_int("TRADEBOT_STREAM_LEASE_MS", 6000, minimum=500)
TRADEBOT_STREAM_RENEW_MS = env_int("TRADEBOT_STREAM_RENEW_MS", 2000, minimum=100)
# Testing / benchmarks only: take "now" from a fake exchange's clock (apps.market.testing.binance, GET /fake/clock).
TRADEBOT_STREAM_CLOCK_URL = env_str("TRADEBOT_STREAM_CLOCK_URL", "")

# --- requests ---------------------------------------------------------------------------------------------------
# Bodies over DATA_UPLOAD_MAX_MEMORY_SIZE (Django's 2.5 MB default) get a 413 and query strings over this a 414, from
# the headers, before any view or parser reads them (tradebot/middleware.py).
TRADEBOT_MAX_QUERY_STRING = env_int("TRADEBOT_MAX_QUERY_STRING", 4096, minimum=1)

# --- API --------------------------------------------------------------------------------------------------------
# Throttle rates ("N/second|minute|hour|day"), counted in the Django cache (Redis when REDIS_URL is set, so every web
# process shares the counts). anon: unauthenticated callers by address; user: per user; login: token requests by
# address.
TRADEBOT_THROTTLE_ANON = env_str("TRADEBOT_THROTTLE_ANON", "60/minute")
TRADEBOT_THROTTLE_USER = env_str("TRADEBOT_THROTTLE_USER", "6000/minute")
TRADEBOT_THROTTLE_LOGIN = env_str("TRADEBOT_THROTTLE_LOGIN", "10/minute")
for _name in ("TRADEBOT_THROTTLE_ANON", "TRADEBOT_THROTTLE_USER", "TRADEBOT_THROTTLE_LOGIN"):
    _rate = globals()[_name]
    _num, _, _period = _rate.partition("/")
    if not (_num.isdigit() and _period[:1] in ("s", "m", "h", "d")):
        raise ImproperlyConfigured(f"environment variable {_name}={_rate!r} is not a rate like 60/minute")
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Token first: its `WWW-Authenticate: Token` header turns an anonymous request into a 401 (session auth has none).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tradebot.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["tradebot.api.permissions.IsStaffOrReadOnly"],
    "DEFAULT_PAGINATION_CLASS": "tradebot.api.pagination.CappedLimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],  # JSON only, never an HTML page
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],  # request bodies are JSON
    "DEFAULT_THROTTLE_CLASSES": ["tradebot.api.throttling.AnonThrottle", "tradebot.api.throttling.UserThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": TRADEBOT_THROTTLE_ANON, "user": TRADEBOT_THROTTLE_USER,
                               "login": TRADEBOT_THROTTLE_LOGIN},
    "EXCEPTION_HANDLER": "tradebot.api.exception_handlers.exception_handler_with_fields",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "tradebot API",
    "DESCRIPTION": "Market data, bots and backtests. Candle timestamps are close times in ms UTC. "
    "Authenticate with `Authorization: Token <key>` (POST /api/v1/auth/token/) or a session; reads need a login, "
    "writes need a staff user.",
    "VERSION": "1.0.0",
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # served from our static files (drf-spectacular-sidecar): works offline
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tradebot.api.schema.add_error_responses",
    ],
    "COMPONENT_SPLIT_REQUEST": True,
    # Bots and backtest jobs both have a "status" field with different choices: name the two enums explicitly.
    "ENUM_NAME_OVERRIDES": {
        "BotStatusEnum": "apps.bots.models.Bot.Status",
        "JobStatusEnum": "apps.backtest.models.Status",
    },
}

# Django cache: Redis when configured (throttle counters shared across processes), else per-process memory.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": "tradebot"}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

LOGIN_URL = "/accounts/login/"  # the dashboard and the API docs (any user; the admin needs staff)
LOGIN_REDIRECT_URL = "/dashboard/"
# Where the admin's "Flower" link points (Flower binds FLOWER_ADDRESS:FLOWER_PORT, 127.0.0.1:5555 by default).
TRADEBOT_FLOWER_URL = env_str("TRADEBOT_FLOWER_URL", "http://127.0.0.1:5555/")


# LOG_LEVEL sets both the root logger (default WARNING) and the `apps` loggers (default INFO).
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_LEVEL_ROOT = env_str("LOG_LEVEL", "WARNING").upper()
LOG_LEVEL_APPS = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL_APPS not in _LOG_LEVELS:
    raise ImproperlyConfigured(f"environment variable LOG_LEVEL={env_str('LOG_LEVEL')!r} is not one of "
                               f"{', '.join(_LOG_LEVELS)}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL_ROOT},
    "loggers": {
        "apps": {"level": LOG_LEVEL_APPS},
        # kombu warns that the in-memory transport has no hostname on every eager chord: noise on the embedded default
        "kombu.connection": {"level": "ERROR"},
    },
}
