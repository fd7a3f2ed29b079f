"""The database: models (one module per aggregate), managers and migrations."""
