"""Micro-benchmarks (not tests): ``python -m normmatters.bench.norms``."""
