"""The local cloud emulator: Entra ID, Azure Resource Manager (Compute, AKS, registries,
identities, authorization, deployments), Key Vault, and IBM Cloud (IAM, Key Protect,
SoftLayer, Cloud Object Storage), served over HTTPS on loopback. It imports nothing of the
project's own code, so a bug in the product cannot hide in the fake."""
