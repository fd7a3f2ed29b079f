"""
The signing service: a Django project of its own, beside the server and apart from it.

It has its own settings module (`debusine.signing.settings`), its own PostgreSQL database
(`DEBUSINE_SIGNING_DATABASE_URL`) with its models and migrations, and its own command,
`debusine-signing`. It never reads the server's settings or connects to the server's database:
a signing worker talks to the server over HTTPS like any external worker.
"""
