"""KeyAuthenticator: every way a token is refused, cache refresh, grace windows."""

from __future__ import annotations

import hmac
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.crypto.master import MasterKey
from keyguard.domain.keys import BASE62, checksum, generate_virtual_key, parse_virtual_key
from keyguard.domain.records import KeySecretHash, KeySpec
from keyguard.domain.secret import Secret
from keyguard.errors import KeyFormatError, StorageUnavailable, Unauthenticated
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault
from keyguard.vault.auth import KeyAuthenticator, _KeyedSha256, secret_digest, split_token
from vault.helpers import Clock


@pytest.fixture
def setup(vault: Vault, openai_key: Secret) -> tuple[Vault, str]:
    vault.add_upstream("prod", openai_key)
    _, token = vault.create_key(KeySpec(name="app", upstream="prod"))
    return vault, token.reveal()


def refused(auth: KeyAuthenticator, token: str, clock: Clock, message: str = "invalid API key"):
    with pytest.raises(Unauthenticated) as info:
        auth.authenticate(token, clock())
    assert str(info.value) == message
    if len(token) > 8:
        assert token not in str(info.value)
    return info.value


def with_checksum(body: str) -> str:
    return "kg_" + body + checksum(body)


def test_valid_token(setup: tuple[Vault, str], clock: Clock) -> None:
    vault, token = setup
    key = vault.authenticator().authenticate(token, clock())
    assert key.key_id == parse_virtual_key(token).key_id and key.name == "app"


def test_wrong_secret_with_valid_checksum(setup: tuple[Vault, str], clock: Clock) -> None:
    vault, token = setup
    parts = parse_virtual_key(token)
    secret = parts.secret[:-1] + ("A" if parts.secret[-1] != "A" else "B")
    refused(vault.authenticator(), with_checksum(parts.key_id + secret), clock)


def test_bad_checksum_and_malformed(setup: tuple[Vault, str], clock: Clock) -> None:
    vault, token = setup
    auth = vault.authenticator()
    last = token[-1]
    refused(auth, token[:-1] + BASE62[(BASE62.index(last) + 1) % 62], clock)
    for bad in ("", "kg_", token[:-1], token + "x", "sk-" + token[3:], token.upper(), " " + token):
        refused(auth, bad, clock)


def test_unknown_id(setup: tuple[Vault, str], clock: Clock) -> None:
    vault, _ = setup
    _, stranger = generate_virtual_key()
    refused(vault.authenticator(), stranger, clock)


def test_revoked_takes_effect_at_once_in_this_process(
    setup: tuple[Vault, str], clock: Clock
) -> None:
    vault, token = setup
    auth = vault.authenticator(refresh_interval=3600)
    auth.authenticate(token, clock())
    vault.revoke_key(parse_virtual_key(token).key_id)
    err = refused(auth, token, clock, "API key revoked")
    assert err.code == "revoked_api_key"


def test_expired(vault: Vault, openai_key: Secret, clock: Clock) -> None:
    vault.add_upstream("prod", openai_key)
    _, token = vault.create_key(
        KeySpec(name="app", upstream="prod", expires_at=clock() + timedelta(hours=1))
    )
    auth = vault.authenticator()
    auth.authenticate(token.reveal(), clock())
    clock.advance(hours=1)
    refused(auth, token.reveal(), clock, "API key expired")


def test_revoked_or_expired_only_told_to_holders_of_the_secret(
    setup: tuple[Vault, str], clock: Clock
) -> None:
    vault, token = setup
    vault.revoke_key(parse_virtual_key(token).key_id)
    parts = parse_virtual_key(token)
    forged = with_checksum(parts.key_id + "Z" * 44)
    refused(vault.authenticator(), forged, clock, "invalid API key")


def test_changes_from_another_process_are_seen_after_refresh(
    setup: tuple[Vault, str], clock: Clock, db_path: Path, master: MasterKey
) -> None:
    vault, token = setup
    ticks = [0.0]
    auth = KeyAuthenticator(
        vault.store, vault._core.server_key, refresh_interval=0.5, monotonic=lambda: ticks[0]
    )
    other = Vault.open(SqliteStore(db_path), master, clock=clock)  # a second connection
    other.revoke_key(parse_virtual_key(token).key_id)
    auth.authenticate(token, clock())  # still within the refresh interval: old snapshot
    ticks[0] = 0.6
    refused(auth, token, clock, "API key revoked")


def test_a_key_made_elsewhere_works_at_once_with_bounded_rechecks(
    setup: tuple[Vault, str], clock: Clock, db_path: Path, master: MasterKey
) -> None:
    """An unknown key makes the authenticator look at the store at once (a key created or
    rotated in another process a moment ago), at most once per RECHECK_INTERVAL."""
    from keyguard.vault.auth import RECHECK_INTERVAL

    vault, _ = setup
    ticks = [0.0]
    auth = KeyAuthenticator(
        vault.store, vault._core.server_key, refresh_interval=3600, monotonic=lambda: ticks[0]
    )
    other = Vault.open(SqliteStore(db_path), master, clock=clock)
    _, first = other.create_key(KeySpec(name="first", upstream="prod"))
    assert auth.authenticate(first.reveal(), clock()).name == "first"  # no wait for the hour
    _, second = other.create_key(KeySpec(name="second", upstream="prod"))
    refused(auth, second.reveal(), clock)  # the recheck budget is spent for this interval
    ticks[0] += RECHECK_INTERVAL
    assert auth.authenticate(second.reveal(), clock()).name == "second"


def test_refresh_on_demand(
    setup: tuple[Vault, str], clock: Clock, db_path: Path, master: MasterKey
) -> None:
    vault, _ = setup
    auth = vault.authenticator(refresh_interval=3600)
    other = Vault.open(SqliteStore(db_path), master, clock=clock)
    _, token = other.create_key(KeySpec(name="later", upstream="prod"))
    assert auth.refresh() is False
    assert auth.refresh(force=True) is True
    auth.authenticate(token.reveal(), clock())


def test_grace_window_for_an_old_secret(setup: tuple[Vault, str], clock: Clock) -> None:
    """The secret table keeps several hashes per key: a rotation can let the old one expire."""
    vault, token = setup
    key_id = parse_virtual_key(token).key_id
    old_digest = vault.store.list_key_secrets(key_id)[0].digest
    _, new_token = generate_virtual_key(key_id)
    new_secret = parse_virtual_key(new_token).secret
    vault.store.add_key_secret(
        KeySecretHash(key_id, secret_digest(vault._core.server_key, new_secret), clock())
    )
    vault.store.set_key_secret_valid_until(key_id, old_digest, clock() + timedelta(minutes=5))
    auth = vault.authenticator()
    auth.authenticate(token, clock())
    auth.authenticate(new_token, clock())
    clock.advance(minutes=5)
    refused(auth, token, clock)
    auth.authenticate(new_token, clock())


def test_storage_failure_keeps_snapshot_then_fails_closed(
    setup: tuple[Vault, str], clock: Clock, db_path: Path
) -> None:
    vault, token = setup
    ticks = [0.0]
    store = SqliteStore(db_path)
    auth = KeyAuthenticator(
        store,
        vault._core.server_key,
        refresh_interval=1,
        max_staleness=10,
        monotonic=lambda: ticks[0],
    )
    store.close()  # every query now fails
    ticks[0] = 5
    auth.authenticate(token, clock())
    ticks[0] = 11
    with pytest.raises(StorageUnavailable):
        auth.authenticate(token, clock())


def test_repr_has_no_secrets(setup: tuple[Vault, str]) -> None:
    vault, token = setup
    auth = vault.authenticator()
    assert token not in repr(auth) and vault._core.server_key.hex() not in repr(auth)


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=0, max_size=100), message=st.binary(max_size=100))
def test_keyed_sha256_is_hmac_sha256(key: bytes, message: bytes) -> None:
    assert _KeyedSha256(key).digest(message) == hmac.digest(key, message, "sha256")


def _near_misses() -> st.SearchStrategy[str]:
    _, token = generate_virtual_key()
    mutate = st.tuples(st.integers(0, len(token) - 1), st.sampled_from(BASE62 + "_-x "))
    return st.one_of(
        st.text(max_size=80),
        st.just(token),
        mutate.map(lambda m: token[: m[0]] + m[1] + token[m[0] + 1 :]),
        st.integers(0, len(token)).map(lambda n: token[:n]),
    )


@settings(max_examples=300, deadline=None)
@given(_near_misses())
def test_split_token_agrees_with_parse_virtual_key(token: str) -> None:
    try:
        parts = parse_virtual_key(token)
        expected: tuple[str, str] | None = (parts.key_id, parts.secret)
    except KeyFormatError:
        expected = None
    assert split_token(token) == expected
