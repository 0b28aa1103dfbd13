"""Envelope encryption of vault secrets under a versioned key-encryption-key (KEK) ring.

Each sealed value gets a fresh 256-bit data key (DEK). The value is sealed with AES-256-GCM
under the DEK; the DEK is wrapped with AES-256-GCM under the newest KEK. Both ciphertexts are
bound by their associated data to the record they belong to (:class:`SealContext`: vault id,
record name, version, purpose, format version), so a ciphertext copied into another row does not
open. The sealed form is self-describing, format version 1::

    offset  size  field
    0       1     magic 0x6B ('k')
    1       1     format version (1)
    2       4     KEK id (big-endian)
    6       12    DEK nonce
    18      48    wrapped DEK (32-byte key + 16-byte tag)
    66      12    value nonce
    78      n+16  value ciphertext + tag

:meth:`Keyring.rewrap` re-wraps only the DEK under the newest KEK; the value ciphertext (and the
plaintext) are never touched, like ``MultiFernet.rotate`` without exposing the value.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from keyguard.crypto import aead
from keyguard.errors import DecryptionError

MAGIC = 0x6B
FORMAT_VERSION = 1
_HEADER = struct.Struct(">BBI12s48s12s")
HEADER_SIZE = _HEADER.size  # 78


@dataclass(frozen=True)
class SealContext:
    """The record a sealed value belongs to; every field is bound into the associated data."""

    vault_id: str
    name: str
    version: int
    purpose: str

    def _aad(self, part: str, *extra: int) -> bytes:
        return aead.encode_aad(
            FORMAT_VERSION, part, self.vault_id, self.name, self.version, self.purpose, *extra
        )


class Keyring:
    """Versioned KEKs: the newest (highest id) seals, every one listed can open.

    Holds raw key bytes; its ``repr`` shows only the KEK ids. ``fetch`` is called with the id of
    a KEK the ring does not hold (one another process added after this ring was built); it
    returns that KEK or ``None``, and a KEK it returns joins the ring.
    """

    __slots__ = ("_current", "_fetch", "_keks")

    def __init__(
        self, keks: Mapping[int, bytes], *, fetch: Callable[[int], bytes | None] | None = None
    ) -> None:
        if not keks:
            raise ValueError("a keyring needs at least one KEK")
        for kek_id, kek in keks.items():
            if not 0 < kek_id < 2**32 or len(kek) != aead.KEY_SIZE:
                raise ValueError("KEK ids are 1..2**32-1 and KEKs are 32 bytes")
        self._keks = dict(keks)
        self._current = max(self._keks)
        self._fetch = fetch

    @property
    def current_id(self) -> int:
        """Id of the KEK that seals new values."""
        return self._current

    @property
    def ids(self) -> tuple[int, ...]:
        """Ids of every KEK in the ring, oldest first."""
        return tuple(sorted(self._keks))

    def with_kek(self, kek_id: int, kek: bytes) -> Keyring:
        """A new ring with one more KEK, which must be newer than every KEK in this one."""
        if kek_id <= self._current:
            raise ValueError("a new KEK needs an id above the current one")
        return Keyring({**self._keks, kek_id: kek}, fetch=self._fetch)

    def _kek(self, kek_id: int) -> bytes | None:
        kek = self._keks.get(kek_id)
        if kek is None and self._fetch is not None and 0 < kek_id < 2**32:
            kek = self._fetch(kek_id)
            if kek is not None and len(kek) == aead.KEY_SIZE:
                self._keks[kek_id] = kek
                self._current = max(self._current, kek_id)
        return kek

    def __repr__(self) -> str:
        return f"Keyring(ids={list(self.ids)}, current={self._current})"

    def seal(self, context: SealContext, plaintext: bytes) -> bytes:
        """Seal ``plaintext`` for ``context`` under a fresh DEK wrapped by the newest KEK."""
        dek = aead.new_key()
        value_nonce, value_ct = aead.encrypt(dek, plaintext, context._aad("value"))
        return self._pack(context, dek, value_nonce, value_ct)

    def unseal(self, context: SealContext, sealed: bytes) -> bytes:
        """Open a sealed value; any integrity failure raises :class:`DecryptionError`."""
        _kek_id, dek, value_nonce, value_ct = self._open_dek(context, sealed)
        return aead.decrypt(dek, value_nonce, value_ct, context._aad("value"))

    def rewrap(self, context: SealContext, sealed: bytes) -> bytes:
        """Re-wrap the DEK under the newest KEK; the value ciphertext is kept as it is."""
        kek_id, dek, value_nonce, value_ct = self._open_dek(context, sealed)
        if kek_id == self._current:
            return sealed
        return self._pack(context, dek, value_nonce, value_ct)

    def _pack(self, context: SealContext, dek: bytes, value_nonce: bytes, value_ct: bytes) -> bytes:
        kek_id = self._current
        dek_nonce, wrapped = aead.encrypt(self._keks[kek_id], dek, context._aad("dek", kek_id))
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, kek_id, dek_nonce, wrapped, value_nonce)
        return header + value_ct

    def _open_dek(self, context: SealContext, sealed: bytes) -> tuple[int, bytes, bytes, bytes]:
        if len(sealed) < HEADER_SIZE + aead.TAG_SIZE:
            raise DecryptionError()
        magic, version, kek_id, dek_nonce, wrapped, value_nonce = _HEADER.unpack_from(sealed)
        if magic != MAGIC or version != FORMAT_VERSION:
            raise DecryptionError()
        kek = self._kek(kek_id)
        if kek is None:
            raise DecryptionError()
        dek = aead.decrypt(kek, dek_nonce, wrapped, context._aad("dek", kek_id))
        return kek_id, dek, value_nonce, bytes(sealed[HEADER_SIZE:])


def sealed_kek_id(sealed: bytes) -> int | None:
    """The KEK id in a sealed value's header (``None`` when it is not a sealed value)."""
    if len(sealed) < HEADER_SIZE or sealed[0] != MAGIC or sealed[1] != FORMAT_VERSION:
        return None
    kek_id: int = _HEADER.unpack_from(sealed)[2]
    return kek_id
