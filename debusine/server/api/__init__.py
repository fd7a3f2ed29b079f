"""REST API 1.0 (and later websockets): one module per resource, problem+json errors."""
