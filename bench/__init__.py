"""Benchmarks and scripted engines for tests; never imported by the product package."""
