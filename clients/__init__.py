"""The one place SDK clients are built, from credential blocks."""
