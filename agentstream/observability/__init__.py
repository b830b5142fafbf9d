"""Logging, metrics, tracing and health."""
