"""Prefect flows: one per procedure."""
