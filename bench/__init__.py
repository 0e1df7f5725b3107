"""Benchmarks, run with `make bench`; each reports our figure against a baseline."""
