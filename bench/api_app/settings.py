from tradebot.settings.test import *  # noqa: F403

ROOT_URLCONF = "api_app.urls"
DEBUG = False
LOGGING["root"]["level"] = "ERROR"  # noqa: F405
