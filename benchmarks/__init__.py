"""Benchmarks for the de-identification services."""
