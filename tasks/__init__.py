"""Prefect tasks: one per documented step, thin wrappers over the SDK clients."""
