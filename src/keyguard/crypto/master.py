"""The master key: wraps the KEK records and proves it opens a vault (the check value).

The master key never seals secrets directly. It wraps each KEK record (so rotating the master
key re-wraps a handful of KEKs, not every secret) and one fixed "check" value, so a wrong master
key is recognised as such instead of surfacing later as corrupt data. Wrapped form, version 1::

    magic 0x6D ('m') | version 1 | 12-byte nonce | ciphertext + 16-byte tag
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
from dataclasses import dataclass
from typing import NoReturn

from keyguard.crypto import aead
from keyguard.errors import ConfigError, DecryptionError

MAGIC = 0x6D
FORMAT_VERSION = 1
_CHECK_PLAINTEXT = b"keyguard master key check v1"


class MasterKey:
    """32 secret bytes. Prints as ``MasterKey(<id>)``; refuses pickling."""

    __slots__ = ("__key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != aead.KEY_SIZE:
            raise ValueError("a master key is exactly 32 bytes")
        self.__key = key

    @classmethod
    def generate(cls) -> MasterKey:
        """A fresh random master key."""
        return cls(aead.new_key())

    @classmethod
    def from_base64(cls, value: str, *, setting: str = "master key") -> MasterKey:
        """Decode standard or URL-safe base64 of 32 bytes; errors name ``setting`` only."""
        text = value.strip()
        try:
            raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{setting} is not valid base64") from None
        if len(raw) != aead.KEY_SIZE:
            raise ConfigError(f"{setting} must be base64 of exactly 32 bytes (got {len(raw)})")
        return cls(raw)

    def reveal(self) -> bytes:
        """The raw key bytes, for the crypto layer and for writing a key file."""
        return self.__key

    def to_base64(self) -> str:
        """Standard base64, the form key files and ``KEYGUARD_MASTER_KEY`` use."""
        return base64.b64encode(self.__key).decode("ascii")

    @property
    def key_id(self) -> str:
        """A short public identifier (not reversible), for messages and audit records."""
        return hmac.new(self.__key, b"keyguard master key id", "sha256").hexdigest()[:12]

    def __repr__(self) -> str:
        return f"MasterKey(id={self.key_id})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterKey):
            return NotImplemented
        return hmac.compare_digest(self.__key, other.reveal())

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __reduce__(self) -> NoReturn:
        raise TypeError("MasterKey objects cannot be pickled")


@dataclass(frozen=True)
class ScryptParams:
    """scrypt parameters and salt for a passphrase-derived master key (kept in vault metadata)."""

    salt: bytes
    n: int = 2**15
    r: int = 8
    p: int = 1

    @classmethod
    def new(cls, *, n: int = 2**15, r: int = 8, p: int = 1) -> ScryptParams:
        """Fresh parameters with a random 16-byte salt."""
        return cls(salt=os.urandom(16), n=n, r=r, p=p)

    def to_json(self) -> bytes:
        """Serialised form stored in vault metadata."""
        doc = {"kdf": "scrypt", "v": 1, "n": self.n, "r": self.r, "p": self.p}
        doc["salt"] = base64.b64encode(self.salt).decode("ascii")
        return json.dumps(doc, sort_keys=True).encode("ascii")

    @classmethod
    def from_json(cls, raw: bytes) -> ScryptParams:
        """Parse :meth:`to_json` output."""
        try:
            doc = json.loads(raw)
            if doc.get("kdf") != "scrypt" or doc.get("v") != 1:
                raise ValueError("unknown kdf")
            return cls(salt=base64.b64decode(doc["salt"]), n=doc["n"], r=doc["r"], p=doc["p"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError("vault passphrase parameters are unreadable") from exc

    def derive(self, passphrase: str) -> MasterKey:
        """The master key for ``passphrase``."""
        if not passphrase:
            raise ConfigError("the vault passphrase must not be empty")
        raw = aead.scrypt(passphrase.encode("utf-8"), self.salt, n=self.n, r=self.r, p=self.p)
        return MasterKey(raw)


def _wrap(master: MasterKey, plaintext: bytes, aad: bytes) -> bytes:
    nonce, ct = aead.encrypt(master.reveal(), plaintext, aad)
    return bytes((MAGIC, FORMAT_VERSION)) + nonce + ct


def _unwrap(master: MasterKey, wrapped: bytes, aad: bytes) -> bytes:
    if len(wrapped) < 2 + aead.NONCE_SIZE + aead.TAG_SIZE:
        raise DecryptionError()
    if wrapped[0] != MAGIC or wrapped[1] != FORMAT_VERSION:
        raise DecryptionError()
    nonce = wrapped[2 : 2 + aead.NONCE_SIZE]
    return aead.decrypt(master.reveal(), nonce, wrapped[2 + aead.NONCE_SIZE :], aad)


def wrap_kek(master: MasterKey, vault_id: str, kek_id: int, kek: bytes) -> bytes:
    """Wrap KEK ``kek_id`` of vault ``vault_id`` under the master key."""
    return _wrap(master, kek, aead.encode_aad(FORMAT_VERSION, "kek", vault_id, kek_id))


def unwrap_kek(master: MasterKey, vault_id: str, kek_id: int, wrapped: bytes) -> bytes:
    """Unwrap a KEK record; :class:`DecryptionError` on any failure."""
    kek = _unwrap(master, wrapped, aead.encode_aad(FORMAT_VERSION, "kek", vault_id, kek_id))
    if len(kek) != aead.KEY_SIZE:
        raise DecryptionError()
    return kek


def new_kek() -> bytes:
    """A fresh random KEK."""
    return aead.new_key()


def make_check(master: MasterKey, vault_id: str) -> bytes:
    """The check value stored with a vault: proves a master key opens it."""
    return _wrap(master, _CHECK_PLAINTEXT, aead.encode_aad(FORMAT_VERSION, "check", vault_id))


def opens(master: MasterKey, vault_id: str, check: bytes) -> bool:
    """True when ``master`` is the key the check value was made with."""
    try:
        plain = _unwrap(master, check, aead.encode_aad(FORMAT_VERSION, "check", vault_id))
    except DecryptionError:
        return False
    return hmac.compare_digest(plain, _CHECK_PLAINTEXT)
