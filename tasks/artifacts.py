"""Artifact keys Prefect accepts (lower-case letters, digits and dashes)."""

from __future__ import annotations

import re


def artifact_key(*parts: str) -> str:
    """A key made of `parts`, with anything else turned into dashes."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())).strip("-")
