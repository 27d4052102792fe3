"""Artifact keys from resource names."""

from tasks.artifacts import artifact_key


def test_names_with_dots_underscores_and_capitals_become_valid_keys() -> None:
    assert artifact_key("replication", "My_Gallery", "ubuntu", "1.0.0") == (
        "replication-my-gallery-ubuntu-1-0-0"
    )
