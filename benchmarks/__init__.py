"""lineguard.benchmarks."""
