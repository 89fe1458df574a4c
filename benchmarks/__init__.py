"""Benchmarks (not tests), kept outside the package so that neither ``import normmatters`` nor an
installed copy carries them. From the repository root: ``python -m benchmarks.norms``."""
