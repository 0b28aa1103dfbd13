"""The Vault facade over real SQLite: lifecycle, upstreams, keys, rotation, no plaintext at rest."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from keyguard.crypto.master import MasterKey, ScryptParams
from keyguard.domain.keys import fingerprint, generate_openai_style_key, parse_virtual_key
from keyguard.domain.records import KeySpec, Label
from keyguard.domain.secret import Secret
from keyguard.errors import (
    AlreadyExists,
    ConfigError,
    DecryptionError,
    KeyFormatError,
    KeyNotFound,
    VaultError,
    VaultLocked,
)
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault
from vault.helpers import Clock


def fresh_key() -> Secret:
    return Secret(generate_openai_style_key())


def reopen(db_path: Path, master: MasterKey, **kw: object) -> Vault:
    return Vault.open(SqliteStore(db_path), master, **kw)  # type: ignore[arg-type]


def actions(v: Vault) -> list[str]:
    return [r.action for r in v.audit.list()]


# -- lifecycle --------------------------------------------------------------------------------


def test_create_then_open(vault: Vault, db_path: Path, master: MasterKey) -> None:
    again = reopen(db_path, master)
    assert again.vault_id == vault.vault_id
    assert Vault.exists(again.store)
    with pytest.raises(AlreadyExists):
        Vault.create(SqliteStore(db_path), master)


def test_open_empty_store_says_no_vault(tmp_path: Path) -> None:
    with pytest.raises(VaultLocked, match="no vault"):
        Vault.open(SqliteStore(tmp_path / "empty.db"), MasterKey.generate())


def test_wrong_master_key_is_locked_and_audited(
    vault: Vault, db_path: Path, master: MasterKey
) -> None:
    with pytest.raises(VaultLocked, match="the master key does not open this vault") as info:
        Vault.open(SqliteStore(db_path), MasterKey.generate(), actor="eve", source="cli")
    assert info.value.__traceback__ is not None and master.to_base64() not in str(info.value)
    v = reopen(db_path, master)
    failed = [r for r in v.audit.list() if r.action == "vault.unlock"]
    assert len(failed) == 1 and failed[0].outcome == "failure" and failed[0].actor == "eve"
    assert v.audit.verify().ok


def test_passphrase_vault(tmp_path: Path) -> None:
    kdf = ScryptParams.new(n=2**10)
    store = SqliteStore(tmp_path / "p.db")
    Vault.create(store, kdf.derive("pass phrase"), kdf=kdf)
    params = Vault.passphrase_params(store)
    assert params == kdf
    assert Vault.open(store, params.derive("pass phrase")).audit.verify().ok
    with pytest.raises(VaultLocked):
        Vault.open(store, params.derive("wrong"))


# -- upstream credentials ---------------------------------------------------------------------


def test_add_and_get_upstream(vault: Vault, openai_key: Secret, clock: Clock) -> None:
    cred = vault.add_upstream(
        "prod", openai_key, organization="org-x", project="proj-y", max_age=timedelta(days=90)
    )
    assert cred.base_url == "https://api.openai.com/v1" and cred.provider == "openai"
    assert cred.created_at == clock() and cred.max_age == timedelta(days=90)
    (v1,) = cred.versions
    assert (v1.version, v1.label, v1.fingerprint) == (1, Label.CURRENT, openai_key.fingerprint)
    assert vault.get_upstream("prod") == cred
    assert vault.list_upstreams() == [cred]
    with pytest.raises(AlreadyExists):
        vault.add_upstream("prod", fresh_key())
    with pytest.raises(KeyNotFound):
        vault.get_upstream("nope")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_url": "http://api.openai.com/v1"},
        {"base_url": "http://127.0.0.1:8080/v1"},
        {"base_url": "ftp://example.com"},
        {"base_url": "https://user:pw@example.com"},
    ],
)
def test_upstream_base_url_rules(vault: Vault, kwargs: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="base_url"):
        vault.add_upstream("x", fresh_key(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url", ["https://u:sk-urlpass@example.com:port/v1", "https://u:sk-urlpass@[::1/v1"]
)
def test_malformed_base_url_error_hides_its_password(vault: Vault, url: str) -> None:
    with pytest.raises(ConfigError, match="not a valid URL") as info:
        vault.add_upstream("x", fresh_key(), base_url=url)
    assert "sk-urlpass" not in str(info.value) and info.value.__cause__ is None


def test_loopback_http_with_opt_in(vault: Vault) -> None:
    cred = vault.add_upstream(
        "local", fresh_key(), base_url="http://127.0.0.1:8080/v1/", allow_insecure_loopback=True
    )
    assert cred.base_url == "http://127.0.0.1:8080/v1" and cred.allow_insecure_loopback


def test_upstream_key_must_look_like_an_openai_key(vault: Vault) -> None:
    with pytest.raises(KeyFormatError) as info:
        vault.add_upstream("prod", Secret("not-a-key-at-all-1234567890"))
    assert "not-a-key-at-all" not in str(info.value)
    vault.add_upstream("other", Secret("custom-provider-token-000000"), validate_key=False)


def test_versions_and_labels(vault: Vault, openai_key: Secret) -> None:
    vault.add_upstream("prod", openai_key)
    k2, k3 = fresh_key(), fresh_key()
    v2 = vault.add_upstream_version("prod", k2)
    assert (v2.version, v2.label) == (2, Label.PENDING)
    vault.add_upstream_version("prod", k3, label=Label.CURRENT)
    labels = {v.version: v.label for v in vault.get_upstream("prod").versions}
    assert labels == {1: Label.PREVIOUS, 2: Label.PENDING, 3: Label.CURRENT}
    assert vault.upstream_secret("prod")[1] == k3
    assert vault.upstream_secret("prod", "PREVIOUS")[1] == openai_key
    vault.set_upstream_label("prod", 2, Label.CURRENT)
    labels = {v.version: v.label for v in vault.get_upstream("prod").versions}
    assert labels == {1: None, 2: Label.PENDING if False else Label.CURRENT, 3: Label.PREVIOUS}
    assert vault.upstream_secret("prod")[1] == k2
    with pytest.raises(KeyNotFound):
        vault.set_upstream_label("prod", 9, Label.PENDING)
    with pytest.raises(KeyNotFound, match="no PENDING version"):
        vault.upstream_secret("prod", Label.PENDING)


def test_upstream_secret_is_cached_and_invalidated(
    vault: Vault, openai_key: Secret, db_path: Path, master: MasterKey
) -> None:
    vault.add_upstream("prod", openai_key)
    first = vault.upstream_secret("prod", audit=False)
    assert vault.upstream_secret("prod", audit=False)[1] is first[1]  # no second decrypt
    other = reopen(db_path, master)
    new = fresh_key()
    other.add_upstream_version("prod", new, label=Label.CURRENT)
    vault._upstreams._watch.expire()  # as if the check interval had passed
    version, secret = vault.upstream_secret("prod", audit=False)
    assert (version.version, secret) == (2, new)


def test_reveals_are_audited_unless_disabled(
    vault: Vault, openai_key: Secret, db_path: Path, master: MasterKey
) -> None:
    vault.add_upstream("prod", openai_key)
    vault.upstream_secret("prod", actor="alice", source="cli")
    vault.upstream_secret("prod", actor="alice", source="cli")
    assert actions(vault).count("upstream.reveal") == 2
    gateway = reopen(db_path, master, source="gateway", audit_reveals=False)
    gateway.upstream_secret("prod")
    assert actions(vault).count("upstream.reveal") == 2


def test_remove_upstream(vault: Vault, openai_key: Secret) -> None:
    vault.add_upstream("prod", openai_key)
    key, _ = vault.create_key(KeySpec(name="app", upstream="prod"))
    with pytest.raises(VaultError, match="used by 1 active virtual keys"):
        vault.remove_upstream("prod")
    vault.revoke_key(key.key_id)
    vault.remove_upstream("prod")
    with pytest.raises(KeyNotFound):
        vault.upstream_secret("prod")
    assert vault.find_managed(openai_key.fingerprint) is None
    with pytest.raises(KeyNotFound):
        vault.remove_upstream("prod")


# -- virtual keys -----------------------------------------------------------------------------


def test_create_list_get_revoke(vault: Vault, openai_key: Secret, clock: Clock) -> None:
    vault.add_upstream("prod", openai_key)
    spec = KeySpec(name="app", upstream="prod", owner="alice", allowed_models=("gpt-4o",), rpm=10)
    key, token = vault.create_key(spec, actor="alice")
    assert parse_virtual_key(token.reveal()).key_id == key.key_id
    assert token.reveal() not in repr(key) and token.reveal() not in repr(token)
    assert vault.get_key(key.key_id) == key and vault.list_keys() == [key]
    assert (key.owner, key.allowed_models, key.rpm, key.created_at) == (
        "alice",
        ("gpt-4o",),
        10,
        clock(),
    )
    clock.advance(minutes=1)
    revoked = vault.revoke_key(key.key_id, reason="leaked")
    assert revoked.revoked_at == clock()
    clock.advance(minutes=1)
    assert vault.revoke_key(key.key_id).revoked_at == revoked.revoked_at  # permanent
    with pytest.raises(KeyNotFound):
        vault.get_key("zzzzzzzzzzzz")
    with pytest.raises(KeyNotFound):
        vault.create_key(KeySpec(name="x", upstream="missing"))
    assert actions(vault)[-3:] == ["key.create", "key.revoke", "key.revoke"]


def test_touch_keys(vault: Vault, openai_key: Secret, clock: Clock) -> None:
    vault.add_upstream("prod", openai_key)
    key, _ = vault.create_key(KeySpec(name="app", upstream="prod"))
    generation = vault.store.generation()
    vault.touch_keys({key.key_id: clock() + timedelta(seconds=5)})
    assert vault.get_key(key.key_id).last_used_at == clock() + timedelta(seconds=5)
    assert vault.store.generation() == generation  # caches are not invalidated by usage


def test_scanner_lookups(vault: Vault, openai_key: Secret) -> None:
    vault.add_upstream("prod", openai_key)
    key, token = vault.create_key(KeySpec(name="app", upstream="prod"))
    match = vault.find_managed(fingerprint(openai_key.reveal()))
    assert (
        match is not None and match.description == "upstream credential 'prod' version 1, CURRENT"
    )
    assert vault.find_managed(fingerprint(generate_openai_style_key())) is None
    vk = vault.match_virtual_key(token.reveal())
    assert vk is not None and vk.key_id == key.key_id and vk.kind == "virtual_key"
    parts = parse_virtual_key(token.reveal())
    from keyguard.domain.keys import checksum

    forged_body = parts.key_id + "Q" * 44
    assert vault.match_virtual_key("kg_" + forged_body + checksum(forged_body)) is None
    assert vault.match_virtual_key("garbage") is None
    vault.revoke_key(key.key_id)
    vk = vault.match_virtual_key(token.reveal())
    assert vk is not None and vk.revoked and "revoked" in vk.description


# -- key rotation and integrity ---------------------------------------------------------------


def test_rotate_kek_and_rewrap(
    vault: Vault, openai_key: Secret, db_path: Path, master: MasterKey
) -> None:
    vault.add_upstream("prod", openai_key)
    from keyguard.crypto.envelope import sealed_kek_id

    assert sealed_kek_id(vault.store.get_sealed_upstream("prod", 1)) == 1
    assert vault.rotate_kek(rewrap=False) == 2
    assert sealed_kek_id(vault.store.get_sealed_upstream("prod", 1)) == 1
    assert vault.rewrap() == 3  # the upstream key and the two internal keys
    assert sealed_kek_id(vault.store.get_sealed_upstream("prod", 1)) == 2
    assert vault.rewrap() == 0
    vault.clear_caches()
    assert vault.upstream_secret("prod")[1] == openai_key
    again = reopen(db_path, master)
    assert again.upstream_secret("prod")[1] == openai_key
    assert again.audit.verify().ok
    assert {"vault.rotate_kek", "vault.rewrap"} <= set(actions(again))


def test_rotate_master_key(
    vault: Vault, openai_key: Secret, db_path: Path, master: MasterKey
) -> None:
    vault.add_upstream("prod", openai_key)
    new = MasterKey.generate()
    vault.rotate_master_key(new)
    with pytest.raises(VaultLocked):
        reopen(db_path, master)
    after = reopen(db_path, new)
    assert after.upstream_secret("prod")[1] == openai_key
    assert after.audit.verify().ok
    kdf = ScryptParams.new(n=2**10)
    after.rotate_master_key(kdf.derive("now a passphrase"), kdf=kdf)
    assert Vault.passphrase_params(after.store) == kdf
    after.rotate_master_key(new)
    assert Vault.passphrase_params(after.store) is None


def test_ciphertext_moved_to_another_record_fails(vault: Vault, db_path: Path) -> None:
    vault.add_upstream("a", fresh_key())
    vault.add_upstream("b", fresh_key())
    vault.add_upstream_version("a", fresh_key())
    conn = sqlite3.connect(db_path, isolation_level=None)
    sealed_a1 = conn.execute(
        "SELECT sealed FROM upstream_versions WHERE upstream='a' AND version=1"
    ).fetchone()[0]
    for target in (("b", 1), ("a", 2)):  # another credential, another version
        conn.execute(
            "UPDATE upstream_versions SET sealed=? WHERE upstream=? AND version=?",
            (sealed_a1, *target),
        )
    conn.close()
    vault.clear_caches()
    with pytest.raises(DecryptionError):
        vault.upstream_secret("b")
    with pytest.raises(DecryptionError):
        vault.upstream_secret("a", Label.PENDING)


def test_swapped_internal_keys_fail_to_open(vault: Vault, db_path: Path, master: MasterKey) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    server, audit = (
        conn.execute("SELECT value FROM meta WHERE name=?", (n,)).fetchone()[0]
        for n in ("server_key", "audit_key")
    )
    conn.execute("UPDATE meta SET value=? WHERE name='server_key'", (audit,))
    conn.execute("UPDATE meta SET value=? WHERE name='audit_key'", (server,))
    conn.close()
    with pytest.raises(DecryptionError):
        reopen(db_path, master)


def test_tampered_kek_record_fails(vault: Vault, db_path: Path, master: MasterKey) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("UPDATE keks SET wrapped = substr(wrapped, 1, length(wrapped) - 1) || x'00'")
    conn.close()
    with pytest.raises(DecryptionError):
        reopen(db_path, master)


# -- no secrets at rest or in text ------------------------------------------------------------


def test_no_plaintext_key_bytes_in_database_files(
    vault: Vault, db_path: Path, openai_key: Secret, master: MasterKey
) -> None:
    vault.add_upstream("prod", openai_key)
    vault.add_upstream_version("prod", fresh_key())
    key, token = vault.create_key(KeySpec(name="app", upstream="prod"))
    vault.upstream_secret("prod")
    secret_part = parse_virtual_key(token.reveal()).secret
    needles = [
        openai_key.reveal().encode(),
        openai_key.reveal()[-24:].encode(),
        token.reveal().encode(),
        secret_part.encode(),
        master.reveal(),
        master.to_base64().encode(),
        vault._core.server_key,
    ]
    files = [db_path, Path(f"{db_path}-wal")]
    assert files[1].stat().st_size > 0  # the data is (at least partly) still in the WAL
    for f in files:
        content = f.read_bytes()
        for needle in needles:
            assert needle not in content, f"secret bytes found in {f.name}"
    vault.store.close()  # checkpoint the WAL into the main file and check again
    content = db_path.read_bytes()
    assert all(n not in content for n in needles)


def test_reprs_and_errors_carry_no_secrets(vault: Vault, openai_key: Secret) -> None:
    vault.add_upstream("prod", openai_key)
    key, token = vault.create_key(KeySpec(name="app", upstream="prod"))
    texts = [
        repr(vault),
        repr(vault.get_upstream("prod")),
        repr(key),
        repr(token),
        repr(vault.upstream_secret("prod")),
        repr(vault._core),
        repr(vault.audit),
    ]
    for t in texts:
        assert openai_key.reveal() not in t and token.reveal() not in t
        assert vault._core.server_key.hex() not in t


def test_kek_added_by_another_process_is_picked_up(
    vault: Vault, openai_key: Secret, db_path: Path, master: MasterKey
) -> None:
    vault.add_upstream("prod", openai_key)
    other = reopen(db_path, master)
    other.rotate_kek()  # new KEK 2, every record re-wrapped under it
    vault.clear_caches()
    assert vault.upstream_secret("prod", audit=False)[1] == openai_key
    v2 = vault.add_upstream_version("prod", fresh_key())
    from keyguard.crypto.envelope import sealed_kek_id

    assert sealed_kek_id(vault.store.get_sealed_upstream("prod", v2.version)) == 2
    assert vault.rotate_kek() == 3


def test_master_rotated_elsewhere_then_new_kek_says_reopen(
    vault: Vault, openai_key: Secret, db_path: Path, master: MasterKey
) -> None:
    vault.add_upstream("prod", openai_key)
    other = reopen(db_path, master)
    other.rotate_master_key(MasterKey.generate())
    other.rotate_kek()
    vault.clear_caches()
    with pytest.raises(VaultLocked, match="rotated by another process"):
        vault.upstream_secret("prod", audit=False)


def test_store_without_keks_is_locked(vault: Vault, db_path: Path, master: MasterKey) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("DELETE FROM keks")
    conn.close()
    with pytest.raises(VaultLocked, match="no key-encryption keys"):
        reopen(db_path, master)


def test_rotating_with_a_stale_master_key_is_refused(
    vault: Vault, db_path: Path, master: MasterKey
) -> None:
    reopen(db_path, master).rotate_master_key(MasterKey.generate())
    with pytest.raises(VaultLocked, match="rotated by another process"):
        vault.rotate_master_key(MasterKey.generate())


@pytest.mark.parametrize("field", ["organization", "project"])
@pytest.mark.parametrize("value", ["org-x\r\nX-Evil: 1", "has space", "a" * 200, "\x00"])
def test_header_ids_cannot_split_headers(vault: Vault, field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=field):
        vault.add_upstream("prod", fresh_key(), **{field: value})  # type: ignore[arg-type]


def test_wal_and_shm_files_are_private(vault: Vault, db_path: Path, openai_key: Secret) -> None:
    import stat

    vault.add_upstream("prod", openai_key)
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db_path}{suffix}")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
