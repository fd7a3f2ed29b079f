"""Django project wiring: settings, URL configuration, ASGI application, system checks."""
