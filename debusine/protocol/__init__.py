"""Pydantic models of the wire API (Debusine API 1.0): the contract shared by server, worker and client. No Django."""
