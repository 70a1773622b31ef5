"""Thin Prefect flows: each task wraps one `telescore.jobs` call."""
