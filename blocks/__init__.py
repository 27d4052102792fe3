"""Prefect credential blocks (`prefect block register -m blocks`)."""

from blocks.azure import AzureCredentials
from blocks.ibm import IBMCloudCredentials

__all__ = ["AzureCredentials", "IBMCloudCredentials"]
