"""Benchmarks: seeded workloads, measured against the reference book in the same run."""
