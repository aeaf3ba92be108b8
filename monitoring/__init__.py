"""lineguard.monitoring."""
