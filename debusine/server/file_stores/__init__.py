"""File stores: one interface, one module per backend (local, memory; S3 later)."""
