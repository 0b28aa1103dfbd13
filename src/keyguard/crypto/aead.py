"""The one seam to ``cryptography.hazmat``: AES-256-GCM with random nonces, and scrypt.

Callers never choose a nonce or a mode. Every failure to open a ciphertext (wrong key, wrong
associated data, bit flip, truncation) becomes the same :class:`DecryptionError`.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from keyguard.errors import DecryptionError

KEY_SIZE = 32  # AES-256
NONCE_SIZE = 12  # 96-bit GCM nonce
TAG_SIZE = 16


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    return os.urandom(KEY_SIZE)


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """Encrypt under a fresh random nonce; return ``(nonce, ciphertext_with_tag)``."""
    if len(key) != KEY_SIZE:
        raise ValueError("AES-256-GCM needs a 32-byte key")
    nonce = os.urandom(NONCE_SIZE)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Open a ciphertext; any failure raises :class:`DecryptionError` (no detail, no data)."""
    if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE or len(ciphertext) < TAG_SIZE:
        raise DecryptionError()
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError, OverflowError):
        raise DecryptionError() from None


def encode_aad(*fields: str | int | bytes) -> bytes:
    """Unambiguous encoding of associated data: each field length-prefixed and typed."""
    out = [b"keyguard-aad"]
    for value in fields:
        if isinstance(value, bool):
            raise TypeError("booleans are not AAD fields")
        if isinstance(value, int):
            out.append(b"i" + struct.pack(">Q", value))
            continue
        raw = value.encode("utf-8") if isinstance(value, str) else value
        out.append((b"s" if isinstance(value, str) else b"b") + struct.pack(">I", len(raw)) + raw)
    return b"".join(out)


def scrypt(passphrase: bytes, salt: bytes, *, n: int, r: int, p: int) -> bytes:
    """Derive a 256-bit key from a passphrase with scrypt."""
    return Scrypt(salt=salt, length=KEY_SIZE, n=n, r=r, p=p).derive(passphrase)
