"""vhd-util-compatible VHD encryption (AES-XTS, tap-style dynamic VHD with keyhash).

Public API (paths or binary file objects everywhere):
`encrypt_vhd`, `decrypt_vhd`, `verify_vhd`, `vhd_info`, `keyhash`, `load_key`, `SectorXts`.
"""

from byok.vhd.decrypt import VerifyResult, VhdVerifyError, decrypt_vhd, verify_vhd
from byok.vhd.encrypt import EncryptResult, VhdOutputError, encrypt_vhd
from byok.vhd.format import VhdFormatError
from byok.vhd.info import VhdInfo, vhd_info
from byok.vhd.keys import VhdKeyError, keyhash, load_key, validate_key
from byok.vhd.xts import SectorXts

__all__ = [
    "EncryptResult",
    "SectorXts",
    "VerifyResult",
    "VhdFormatError",
    "VhdInfo",
    "VhdKeyError",
    "VhdOutputError",
    "VhdVerifyError",
    "decrypt_vhd",
    "encrypt_vhd",
    "keyhash",
    "load_key",
    "validate_key",
    "verify_vhd",
    "vhd_info",
]
