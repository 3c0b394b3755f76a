"""Benchmarks: fit and simulation performance, written as JSON and markdown reports."""
