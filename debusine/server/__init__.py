"""The Django server: REST API, websockets, web UI, scheduler and server-side tasks."""
