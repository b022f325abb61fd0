"""Benchmarks run by `python -m fastoptim bench ...` (benchmark code never ships inside library modules)."""
