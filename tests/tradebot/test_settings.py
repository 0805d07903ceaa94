import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def test_given_test_settings_when_loaded_then_postgres_and_redis_are_used():
    assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    assert settings.NOTIFY_BACKEND == "redis"
    assert settings.CELERY_BROKER_URL.startswith("redis://")


def test_given_no_service_urls_when_base_settings_load_then_embedded_default_is_used(tmp_path):
    code = (
        "import django, os; django.setup(); from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_TASK_ALWAYS_EAGER, s.NOTIFY_BACKEND, s.CELERY_BROKER_URL)"
    )
    env = {"DJANGO_SETTINGS_MODULE": "tradebot.settings.base", "TRADEBOT_DATA_DIR": str(tmp_path), "PATH": "/usr/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["django.db.backends.sqlite3", "True", "inprocess", "memory://"]


def test_given_celery_app_when_configured_then_queues_and_reliability_options_are_set():
    from tradebot.celery import app

    assert {q.name for q in app.conf.task_queues} == {"market", "collect", "bots", "backtest"}
    assert app.amqp.router.route({}, "apps.market.tasks.collect_market_task")["queue"].name == "collect"
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
