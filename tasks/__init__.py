"""Prefect tasks: one per documented step, thin wrappers over the SDK clients, one module per
service or step group. A group may run another group's tasks, never borrow its helpers:
what several groups share lives below, in clients/ (SDK helpers) or byok/ (pure), or in the
few modules every group uses by design (retry, in_memory, events, ...: tests/test_layers.py)."""
