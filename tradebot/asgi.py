import os

from django.core.asgi import get_asgi_application

# Production unless told otherwise (DJANGO_SETTINGS_MODULE): it refuses to start without its secrets.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradebot.settings.production")
application = get_asgi_application()
