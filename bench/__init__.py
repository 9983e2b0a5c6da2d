"""Benchmarks: figures to print, not tests. See `bench/bench_operator.py`."""
