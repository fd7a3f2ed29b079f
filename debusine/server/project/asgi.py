"""ASGI entry point, served by gunicorn with uvicorn workers."""

import os

from django.core.asgi import get_asgi_application

from debusine.server.project.instance import SERVING_ASGI_VARIABLE

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "debusine.server.project.settings")
# Before the settings load: this process serves requests, so it pools database connections.
os.environ[SERVING_ASGI_VARIABLE] = "1"

application = get_asgi_application()
