"""Cryptography for the vault: the only package that imports ``cryptography.hazmat``.

Envelope encryption (:class:`Keyring`, :class:`SealContext`), the master key (wrapping KEKs, the
check value, scrypt for passphrases) and the master key sources.
"""

from __future__ import annotations

from keyguard.crypto.envelope import Keyring, SealContext
from keyguard.crypto.master import MasterKey, ScryptParams
from keyguard.crypto.sources import (
    ResolvedMasterKey,
    create_key_file,
    read_key_file,
    resolve_master_key,
    store_in_os_keyring,
)

__all__ = [
    "Keyring",
    "MasterKey",
    "ResolvedMasterKey",
    "ScryptParams",
    "SealContext",
    "create_key_file",
    "read_key_file",
    "resolve_master_key",
    "store_in_os_keyring",
]
