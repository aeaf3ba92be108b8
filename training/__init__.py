"""lineguard.training."""
