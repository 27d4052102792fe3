"""Fleet inventory and evidence (Prefect-free): what discovery finds (`Finding`), the
controls judged on it (`controls`), and the report built from the rows (`report`, `oscal`)."""
