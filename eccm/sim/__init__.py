"""Simulated peers (a car behind an ELM327, a GNSS receiver, a local S3 server) and the
demo: for tests, benchmarks and the demo, never on the product path."""
