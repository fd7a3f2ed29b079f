"""API views: artifacts (being written)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
