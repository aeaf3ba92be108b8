"""lineguard.edge."""
