"""byok-flows: customer-managed-key procedures for Azure and IBM Cloud, and their
Prefect-free libraries."""
