"""Template context shared by the admin and the dashboard."""

from django.conf import settings


def links(request) -> dict:
    return {"tradebot_flower_url": settings.TRADEBOT_FLOWER_URL}
