"""lineguard.registry."""
