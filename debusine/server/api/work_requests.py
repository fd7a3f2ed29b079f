"""API views: work_requests (being written)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
