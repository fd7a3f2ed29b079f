"""Debusine: a software factory for Debian-based distributions."""

__version__ = "0.1.0"
