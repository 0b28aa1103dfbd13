"""Envelope encryption, KEK ring, master key wrapping: round trips and every kind of tampering."""

from __future__ import annotations

import os
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.crypto import aead
from keyguard.crypto.envelope import HEADER_SIZE, Keyring, SealContext, sealed_kek_id
from keyguard.crypto.master import (
    MasterKey,
    ScryptParams,
    make_check,
    opens,
    unwrap_kek,
    wrap_kek,
)
from keyguard.errors import ConfigError, DecryptionError

CTX = SealContext(vault_id="v1", name="prod", version=1, purpose="upstream-api-key")
FIELDS = {  # (offset, length) of each field of format 1
    "magic": (0, 1),
    "format": (1, 1),
    "kek_id": (2, 4),
    "dek_nonce": (6, 12),
    "wrapped_dek": (18, 48),
    "value_nonce": (66, 12),
}


def ring(*ids: int) -> Keyring:
    return Keyring({i: os.urandom(32) for i in ids or (1,)})


@settings(max_examples=60, deadline=None)
@given(
    plaintext=st.binary(max_size=2048),
    name=st.text(max_size=40),
    version=st.integers(min_value=0, max_value=2**40),
    purpose=st.text(max_size=20),
)
def test_seal_unseal_roundtrip(plaintext: bytes, name: str, version: int, purpose: str) -> None:
    kr = ring(1)
    ctx = SealContext("vault", name, version, purpose)
    sealed = kr.seal(ctx, plaintext)
    assert kr.unseal(ctx, sealed) == plaintext
    assert len(sealed) == HEADER_SIZE + len(plaintext) + 16


@settings(max_examples=40, deadline=None)
@given(plaintext=st.binary(min_size=1, max_size=64), data=st.data())
def test_any_single_bit_flip_fails(plaintext: bytes, data: st.DataObject) -> None:
    kr = ring(1)
    sealed = bytearray(kr.seal(CTX, plaintext))
    bit = data.draw(st.integers(min_value=0, max_value=len(sealed) * 8 - 1))
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecryptionError):
        kr.unseal(CTX, bytes(sealed))


@pytest.mark.parametrize("field", [*FIELDS, "ciphertext", "tag"])
def test_bit_flip_in_each_field(field: str) -> None:
    kr = ring(1)
    sealed = bytearray(kr.seal(CTX, b"a secret value"))
    if field == "ciphertext":
        offset = HEADER_SIZE
    elif field == "tag":
        offset = len(sealed) - 1
    else:
        offset = FIELDS[field][0] + FIELDS[field][1] - 1
    sealed[offset] ^= 0x01
    with pytest.raises(DecryptionError) as info:
        kr.unseal(CTX, bytes(sealed))
    assert str(info.value) == str(DecryptionError())  # one opaque message for every failure


@pytest.mark.parametrize("cut", [0, 1, 5, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 15, -1])
def test_truncation(cut: int) -> None:
    kr = ring(1)
    sealed = kr.seal(CTX, b"value")
    with pytest.raises(DecryptionError):
        kr.unseal(CTX, sealed[:cut])


def test_appended_bytes_fail() -> None:
    kr = ring(1)
    with pytest.raises(DecryptionError):
        kr.unseal(CTX, kr.seal(CTX, b"value") + b"\x00")


def test_wrong_keyring() -> None:
    sealed = ring(1).seal(CTX, b"value")
    with pytest.raises(DecryptionError):
        ring(1).unseal(CTX, sealed)


@pytest.mark.parametrize(
    "other",
    [
        SealContext("v2", "prod", 1, "upstream-api-key"),
        SealContext("v1", "prod2", 1, "upstream-api-key"),
        SealContext("v1", "prod", 2, "upstream-api-key"),
        SealContext("v1", "prod", 1, "vault-internal-key"),
    ],
    ids=["vault_id", "name", "version", "purpose"],
)
def test_wrong_aad_each_field(other: SealContext) -> None:
    kr = ring(1)
    with pytest.raises(DecryptionError):
        kr.unseal(other, kr.seal(CTX, b"value"))


def test_swapping_value_ciphertexts_between_records_fails() -> None:
    kr = ring(1)
    ctx_b = SealContext("v1", "other", 1, "upstream-api-key")
    a, b = kr.seal(CTX, b"AAAA"), kr.seal(ctx_b, b"BBBB")
    # header of one record with the value ciphertext of the other, and whole swaps
    with pytest.raises(DecryptionError):
        kr.unseal(CTX, a[:HEADER_SIZE] + b[HEADER_SIZE:])
    with pytest.raises(DecryptionError):
        kr.unseal(CTX, b)


def test_unknown_format_version_and_magic() -> None:
    kr = ring(1)
    sealed = bytearray(kr.seal(CTX, b"value"))
    sealed[1] = 2
    with pytest.raises(DecryptionError):
        kr.unseal(CTX, bytes(sealed))
    sealed[1], sealed[0] = 1, 0x00
    with pytest.raises(DecryptionError):
        kr.unseal(CTX, bytes(sealed))


def test_newest_kek_seals_all_decrypt_and_rewrap_moves_forward() -> None:
    keks = {1: os.urandom(32), 2: os.urandom(32)}
    old = Keyring({1: keks[1]})
    sealed = old.seal(CTX, b"value")
    both = Keyring(keks)
    assert sealed_kek_id(sealed) == 1
    assert both.unseal(CTX, sealed) == b"value"
    rewrapped = both.rewrap(CTX, sealed)
    assert sealed_kek_id(rewrapped) == 2
    assert rewrapped[HEADER_SIZE - 12 :] == sealed[HEADER_SIZE - 12 :]  # value ciphertext kept
    assert both.rewrap(CTX, rewrapped) is rewrapped
    assert Keyring({2: keks[2]}).unseal(CTX, rewrapped) == b"value"
    with pytest.raises(DecryptionError):
        both.rewrap(SealContext("v1", "x", 1, "upstream-api-key"), sealed)
    assert both.with_kek(3, os.urandom(32)).current_id == 3
    with pytest.raises(ValueError):
        both.with_kek(2, os.urandom(32))


def test_keyring_repr_hides_keys() -> None:
    kek = os.urandom(32)
    text = repr(Keyring({7: kek}))
    assert text == "Keyring(ids=[7], current=7)"
    assert kek.hex() not in text


def test_aad_encoding_is_unambiguous() -> None:
    assert aead.encode_aad("ab", "c") != aead.encode_aad("a", "bc")
    assert aead.encode_aad(1) != aead.encode_aad("1") != aead.encode_aad(b"1")
    with pytest.raises(TypeError):
        aead.encode_aad(True)


# -- master key ---------------------------------------------------------------------------


def test_master_key_wraps_keks_bound_to_vault_and_id() -> None:
    m = MasterKey.generate()
    kek = os.urandom(32)
    wrapped = wrap_kek(m, "v1", 1, kek)
    assert unwrap_kek(m, "v1", 1, wrapped) == kek
    for args in (("v2", 1), ("v1", 2)):
        with pytest.raises(DecryptionError):
            unwrap_kek(m, *args, wrapped)
    with pytest.raises(DecryptionError):
        unwrap_kek(MasterKey.generate(), "v1", 1, wrapped)
    with pytest.raises(DecryptionError):
        unwrap_kek(m, "v1", 1, wrapped[:-1])


def test_check_value() -> None:
    m = MasterKey.generate()
    check = make_check(m, "v1")
    assert opens(m, "v1", check)
    assert not opens(MasterKey.generate(), "v1", check)
    assert not opens(m, "v2", check)
    assert not opens(m, "v1", b"garbage")


def test_master_key_never_prints_or_pickles() -> None:
    m = MasterKey.generate()
    for text in (repr(m), str(m), f"{m}"):
        assert m.to_base64() not in text and m.reveal().hex() not in text
    with pytest.raises(TypeError):
        pickle.dumps(m)
    assert MasterKey.from_base64(m.to_base64()) == m
    urlsafe = m.to_base64().replace("+", "-").replace("/", "_")
    assert MasterKey.from_base64(urlsafe + "\n") == m


@pytest.mark.parametrize("bad", ["not base64!", "", "AAAA"])
def test_master_key_from_bad_base64_names_setting_only(bad: str) -> None:
    with pytest.raises(ConfigError, match="KEYGUARD_MASTER_KEY") as info:
        MasterKey.from_base64(bad, setting="KEYGUARD_MASTER_KEY")
    if bad:
        assert bad not in str(info.value)


def test_scrypt_passphrase() -> None:
    params = ScryptParams.new(n=2**10)
    again = ScryptParams.from_json(params.to_json())
    assert again == params
    assert again.derive("correct horse") == params.derive("correct horse")
    assert params.derive("correct horse") != params.derive("wrong horse")
    assert ScryptParams.new(n=2**10).derive("correct horse") != params.derive("correct horse")
    with pytest.raises(ConfigError):
        params.derive("")
    with pytest.raises(ConfigError):
        ScryptParams.from_json(b"{}")
