"""Tests of the worker daemon."""
