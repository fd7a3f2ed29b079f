"""Web UI and the web-side file downloads (`/{scope}/{workspace}/artifact/{id}/download/`)."""
