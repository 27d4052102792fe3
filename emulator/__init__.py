"""The local cloud emulator: Entra ID, ARM and Key Vault (IBM Cloud to come), served over
HTTPS on loopback."""
