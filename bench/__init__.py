"""Benchmarks: figures written to bench/results/, never asserted."""
