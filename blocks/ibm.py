"""The IBM Cloud credentials block: API key, account, region and endpoint overrides."""

from __future__ import annotations

from typing import Any, cast

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.chosen import chosen_block


class IBMCloudCredentials(Block):
    """An IBM Cloud API key with its account and region, and the endpoints of IAM, Key
    Protect, Cloud Object Storage and the SoftLayer (classic) API: public by default,
    overridable for private endpoints and the byok emulator."""

    _block_type_name = "BYOK IBM Cloud Credentials"
    _block_type_slug = "byok-ibm-cloud-credentials"
    _description = "Credentials and endpoints for the byok-flows IBM Cloud procedure."

    api_key: SecretStr = Field(
        ...,
        description="IBM Cloud API key (also the SoftLayer API password, with user name 'apikey').",
    )
    account_id: str = Field(..., description="IBM Cloud account id.")
    region: str = Field("us-south", description="Region of Key Protect and the COS bucket.")
    iam_url: str = Field("https://iam.cloud.ibm.com", description="IAM endpoint.")
    key_protect_url: str | None = Field(
        None, description="Key Protect endpoint; default `https://<region>.kms.cloud.ibm.com`."
    )
    cos_endpoint: str | None = Field(
        None, description="COS S3 endpoint; default the region's public regional endpoint."
    )
    cos_hmac_access_key_id: str | None = Field(
        None, description="COS HMAC access key id (instead of IAM authentication to COS)."
    )
    cos_hmac_secret_access_key: SecretStr | None = Field(
        None, description="COS HMAC secret access key."
    )
    softlayer_url: str = Field(
        "https://api.softlayer.com/rest/v3.1", description="SoftLayer REST API base URL."
    )
    vpc_url: str | None = Field(
        None, description="VPC API endpoint; default `https://<region>.iaas.cloud.ibm.com/v1`."
    )
    ca_bundle: str | None = Field(
        None, description="Path of a PEM CA bundle to trust (private CA, emulator)."
    )

    @classmethod
    def chosen(cls, given: Any, name: str | None) -> IBMCloudCredentials:
        """The block picked in a flow's `credentials` parameter, else the one the request's
        `ibm_credentials_block` names."""
        return chosen_block(cls, given, name, "request.ibm_credentials_block")

    @classmethod
    def load_saved(cls, name: str) -> IBMCloudCredentials:
        """Load a saved block by name (synchronously, typed)."""
        return cast(IBMCloudCredentials, cls.load(name))

    def key_protect_endpoint(self) -> str:
        """The Key Protect URL for this region."""
        return self.key_protect_url or f"https://{self.region}.kms.cloud.ibm.com"

    def cos_s3_endpoint(self) -> str:
        """The COS S3 URL for this region."""
        return self.cos_endpoint or (
            f"https://s3.{self.region}.cloud-object-storage.appdomain.cloud"
        )

    def vpc_endpoint(self) -> str:
        """The VPC API URL for this region."""
        return self.vpc_url or f"https://{self.region}.iaas.cloud.ibm.com/v1"
