"""lineguard.labeling."""
