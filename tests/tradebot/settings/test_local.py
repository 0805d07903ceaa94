"""The developer profile: manage.py's default; with nothing set it is the embedded default with DEBUG on."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_given_nothing_set_when_manage_py_runs_then_local_profile_gives_the_embedded_default_with_debug(tmp_path):
    code = ("from django.conf import settings as s; import os; print(os.environ['DJANGO_SETTINGS_MODULE'], s.DEBUG, "
            "s.DATABASES['default']['ENGINE'], s.CELERY_TASK_ALWAYS_EAGER, s.NOTIFY_BACKEND, s.CELERY_BROKER_URL, "
            "s.SECRET_KEY == s.DEV_SECRET_KEY)")
    env = {"TRADEBOT_DATA_DIR": str(tmp_path), "PATH": "/usr/bin"}
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-7:] == ["tradebot.settings.local", "True", "django.db.backends.sqlite3", "True",
                                        "inprocess", "memory://", "True"]


def test_given_the_makefile_when_read_then_demo_and_run_use_the_local_profile():
    makefile = (ROOT / "Makefile").read_text()
    assert "DJANGO_SETTINGS_MODULE=tradebot.settings.local" in makefile  # DEMO_ENV
    run = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "$(DEV_ENV)" in run and "DJANGO_SETTINGS_MODULE:-tradebot.settings.local" in makefile
