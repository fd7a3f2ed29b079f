"""ASGI entry point, served by gunicorn with uvicorn workers."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "debusine.server.project.settings")

application = get_asgi_application()
