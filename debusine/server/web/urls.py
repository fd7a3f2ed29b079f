"""URL configuration of the web side: pages and artifact downloads."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
