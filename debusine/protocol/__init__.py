"""
Pydantic models of the wire API (Debusine API 1.0).

The contract shared by the server, the worker and the client; never imports Django.
"""
