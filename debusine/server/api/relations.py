"""API views: relations (being written)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
