"""Production settings: refuse to start without their secrets, and pass `check --deploy` with no warning.

Each case starts a fresh interpreter (settings are read once per process), with only the variables given.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
STRONG_KEY = "k3y-" + "".join(chr(ord("a") + i % 26) + str(i % 10) for i in range(40))


def production_env(**overrides) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "tradebot.settings.production",
        "DJANGO_SECRET_KEY": STRONG_KEY,
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "REDIS_URL": os.environ["REDIS_URL"],
        "DJANGO_ALLOWED_HOSTS": "tradebot.example.com",
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


SETUP = ["-c", "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"]


def test_given_a_valid_production_env_when_check_deploy_runs_then_it_exits_0_with_no_warning():
    done = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env())

    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout
    assert "WARNING" not in done.stdout + done.stderr and "?: (" not in done.stdout + done.stderr


@pytest.mark.parametrize(("name", "value"), [("DJANGO_SECRET_KEY", None), ("DJANGO_SECRET_KEY", " "),
                                           ("DATABASE_URL", None), ("REDIS_URL", ""), ("DJANGO_ALLOWED_HOSTS", None)])
def test_given_a_missing_secret_when_production_starts_then_improperly_configured_names_it(name, value):
    done = run(SETUP, production_env(**{name: value}))

    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and f"{name} must be set in production" in done.stderr


@pytest.mark.parametrize(("overrides", "message"), [
    ({"DJANGO_SECRET_KEY": "dev-only-insecure-key-set-DJANGO_SECRET_KEY-in-production"}, "the development key"),
    ({"DJANGO_SECRET_KEY": "short-secret"}, "DJANGO_SECRET_KEY is too weak"),
    ({"DJANGO_SECRET_KEY": "django-insecure-" + "x1y2z3" * 10}, "DJANGO_SECRET_KEY is too weak"),
    ({"DJANGO_DEBUG": "1"}, "DJANGO_DEBUG is on"),
    ({"DJANGO_DEBUG": "perhaps"}, "DJANGO_DEBUG='perhaps' is not a boolean"),
    ({"DJANGO_ALLOWED_HOSTS": " , "}, "DJANGO_ALLOWED_HOSTS must name at least one host"),
    ({"DJANGO_SECURE_SSL_REDIRECT": "maybe"}, "DJANGO_SECURE_SSL_REDIRECT='maybe' is not a boolean"),
    ({"DJANGO_SECURE_HSTS_SECONDS": "a year"}, "DJANGO_SECURE_HSTS_SECONDS='a year' is not an integer"),
])
def test_given_a_bad_secret_or_flag_when_production_starts_then_improperly_configured_names_the_variable(
        overrides, message):
    done = run(SETUP, production_env(**overrides))

    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and message in done.stderr


def test_given_a_valid_production_env_when_settings_load_then_they_are_hardened():
    code = ("import django; django.setup(); from django.conf import settings as s; print(s.DEBUG, "
            "s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS > 0, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
            "s.X_FRAME_OPTIONS, s.SECURE_PROXY_SSL_HEADER[0], s.ALLOWED_HOSTS)")
    done = run(["-c", code], production_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True", "True", "True", "DENY", "HTTP_X_FORWARDED_PROTO",
                                   "['tradebot.example.com']"]

    behind_proxy = run(["-c", "import django; django.setup(); from django.conf import settings as s; "
                              "print(s.SECURE_SSL_REDIRECT)"], production_env(DJANGO_SECURE_SSL_REDIRECT="0"))
    assert behind_proxy.stdout.split() == ["False"]


@pytest.mark.parametrize("module", ["tradebot.wsgi", "tradebot.asgi"])
def test_given_no_settings_module_when_the_web_entry_point_loads_then_production_is_required(module):
    done = run(["-c", f"import {module}"], production_env(DJANGO_SETTINGS_MODULE=None, DJANGO_SECRET_KEY=None))

    assert done.returncode != 0 and "DJANGO_SECRET_KEY must be set in production" in done.stderr


def test_given_no_settings_module_when_the_celery_app_loads_then_it_runs_production():
    code = "from tradebot.celery import app; app.loader.import_default_modules(); import os; print(app.conf.broker_url)"
    done = run(["-c", code], production_env(DJANGO_SETTINGS_MODULE=None, DJANGO_SECRET_KEY=None))
    assert done.returncode != 0 and "DJANGO_SECRET_KEY must be set in production" in done.stderr

    ok = run(["-c", code], production_env(DJANGO_SETTINGS_MODULE=None))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == os.environ["REDIS_URL"]


def _procfile_roles() -> dict[str, str]:
    return dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())


def test_given_the_procfile_when_read_then_web_worker_and_beat_default_to_production():
    roles = _procfile_roles()
    for role in ("web", "worker", "beat"):
        assert "DJANGO_SETTINGS_MODULE:-tradebot.settings.production" in roles[role], role


def test_given_the_procfile_when_read_then_web_runs_threaded_gunicorn_workers():
    """A single sync worker served one request at a time and refused the dashboards' live event streams."""
    roles = _procfile_roles()
    assert "gunicorn tradebot.wsgi" in roles["web"]
    assert "--workers ${WEB_CONCURRENCY:-2}" in roles["web"] and "--threads ${WEB_THREADS:-8}" in roles["web"]
