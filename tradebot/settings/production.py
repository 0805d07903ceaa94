"""Production: the default of wsgi/asgi, the Celery app and the Procfile's web/worker/beat.

It refuses to start without its secrets (DJANGO_SECRET_KEY, DATABASE_URL, REDIS_URL, DJANGO_ALLOWED_HOSTS), refuses the
developer secret key, and is hardened so that `manage.py check --deploy --fail-level WARNING` passes with no warning:
HSTS, secure + HttpOnly cookies, an SSL redirect, X-Frame-Options DENY, nosniff, a strict referrer policy.

Behind a proxy that terminates TLS: it must set X-Forwarded-Proto (trusted through SECURE_PROXY_SSL_HEADER) so the
SSL redirect sees https; set DJANGO_SECURE_SSL_REDIRECT=0 only when the proxy itself redirects http to https.
"""

import os

from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_int, env_list, env_str

_REQUIRED = ("DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DJANGO_ALLOWED_HOSTS")
for _name in _REQUIRED:
    if not os.environ.get(_name, "").strip():
        raise ImproperlyConfigured(f"environment variable {_name} must be set in production")

from .base import *  # noqa: E402,F403
from .base import DEV_SECRET_KEY, LOGGING, SECRET_KEY  # noqa: E402

if SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured("environment variable DJANGO_SECRET_KEY is the development key: set a real secret")
if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure-"):
    raise ImproperlyConfigured(
        "environment variable DJANGO_SECRET_KEY is too weak: use at least 50 characters, 5 of them distinct "
        "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))')")

DEBUG = env_bool("DJANGO_DEBUG", False)
if DEBUG:
    raise ImproperlyConfigured("environment variable DJANGO_DEBUG is on: production never runs with DEBUG")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS")
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("environment variable DJANGO_ALLOWED_HOSTS must name at least one host in production")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# --- security (https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/) -------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"

LOGGING["root"]["level"] = env_str("LOG_LEVEL", "INFO").upper()
