"""System health: the one endpoint open to anonymous callers (load balancers, uptime checks).

Anonymous callers get the overall status and the checks' booleans; authenticated users also get worker names and the
beat's last run. 200 when the database and Redis answer, 503 otherwise.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

HealthResponse = inline_serializer("Health", {
    "status": serializers.ChoiceField(choices=["ok", "degraded"]),
    "database": serializers.BooleanField(),
    "redis": serializers.BooleanField(),
    "workers": serializers.ListField(child=serializers.CharField(), required=False,
                                     help_text="Celery workers that answered a ping (authenticated only)"),
    "beat_last_run": serializers.DateTimeField(allow_null=True, required=False,
                                               help_text="Latest last_run_at of the beat schedule (authenticated)"),
    "elapsed_ms": serializers.FloatField(),
})


def check_database() -> bool:
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone()[0] == 1
    except Exception:  # noqa: BLE001 - health reports, never raises
        return False


def check_redis() -> bool:
    if not settings.REDIS_URL:
        return True  # embedded default: no Redis needed
    try:
        import redis

        return bool(redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1).ping())
    except Exception:  # noqa: BLE001
        return False


def workers_seen(timeout: float = 0.5) -> list[str]:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return []
    try:
        from tradebot.celery import app

        return sorted(name for reply in app.control.ping(timeout=timeout) or [] for name in reply)
    except Exception:  # noqa: BLE001
        return []


def beat_last_run():
    try:
        from django.db.models import Max
        from django_celery_beat.models import PeriodicTask

        return PeriodicTask.objects.aggregate(last=Max("last_run_at"))["last"]
    except Exception:  # noqa: BLE001
        return None


class HealthView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: HealthResponse, 503: HealthResponse}, auth=[{}, {"tokenAuth": []}])
    def get(self, request):
        t0 = time.perf_counter()
        body = {"database": check_database(), "redis": check_redis()}
        body["status"] = "ok" if all(body.values()) else "degraded"
        if request.user and request.user.is_authenticated:
            body["workers"] = workers_seen()
            last = beat_last_run() if body["database"] else None
            body["beat_last_run"] = last.isoformat() if last else None
        body["elapsed_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return Response(body, status=200 if body["status"] == "ok" else 503)
