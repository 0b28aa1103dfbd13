"""Master key sources and their resolution order; key file permissions."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend

from keyguard.crypto.master import MasterKey, ScryptParams
from keyguard.crypto.sources import (
    KEYRING_SERVICE,
    KEYRING_USER,
    create_key_file,
    read_key_file,
    resolve_master_key,
    store_in_os_keyring,
)
from keyguard.errors import ConfigError, VaultLocked


class MemoryKeyring(KeyringBackend):
    """A hand-written double of the third-party ``keyring`` backend."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.entries.pop((service, username), None)


@pytest.fixture
def os_keyring() -> object:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def test_key_file_is_created_0600_and_never_overwritten(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = home / "master.key"
    key = MasterKey.generate()
    create_key_file(path, key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert read_key_file(path) == key
    with pytest.raises(ConfigError, match="already exists"):
        create_key_file(path, MasterKey.generate())
    assert read_key_file(path) == key
    assert [p.name for p in home.iterdir()] == ["master.key"]  # no temporary file left


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o700])
def test_group_or_world_accessible_key_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    key = MasterKey.generate()
    create_key_file(path, key)
    path.chmod(mode)
    if mode & 0o077 == 0:
        assert read_key_file(path) == key
        return
    with pytest.raises(ConfigError, match="chmod 600") as info:
        resolve_master_key(tmp_path, {})
    assert key.to_base64() not in str(info.value)


def test_key_file_symlink_and_garbage_are_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    create_key_file(real, MasterKey.generate())
    link = tmp_path / "master.key"
    link.symlink_to(real)
    with pytest.raises(ConfigError):
        resolve_master_key(tmp_path, {})
    link.unlink()
    fd = os.open(link, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"definitely not a key")
    os.close(fd)
    with pytest.raises(ConfigError, match="not valid base64|32 bytes"):
        resolve_master_key(tmp_path, {})


def test_resolution_order(tmp_path: Path, os_keyring: MemoryKeyring) -> None:
    env_key, file_key, ring_key = MasterKey.generate(), MasterKey.generate(), MasterKey.generate()
    kdf = ScryptParams.new(n=2**10)
    asked: list[bool] = []

    def prompt() -> str:
        asked.append(True)
        return "a passphrase"

    # nothing: locked, with advice
    with pytest.raises(VaultLocked, match="no master key found"):
        resolve_master_key(tmp_path, {}, use_os_keyring=False)
    # passphrase (only with the vault's kdf parameters)
    got = resolve_master_key(tmp_path, {}, prompt, kdf=kdf)
    assert (got.key, got.source) == (kdf.derive("a passphrase"), "passphrase")
    # the OS keyring, for a vault without passphrase parameters...
    store_in_os_keyring(ring_key)
    assert os_keyring.entries[(KEYRING_SERVICE, KEYRING_USER)] == ring_key.to_base64()
    got = resolve_master_key(tmp_path, {}, prompt)
    assert (got.key, got.source) == (ring_key, "keyring")
    # ...never for a passphrase-protected one (the entry may be another vault's, or stale)
    got = resolve_master_key(tmp_path, {}, prompt, kdf=kdf)
    assert (got.key, got.source) == (kdf.derive("a passphrase"), "passphrase")
    assert (
        resolve_master_key(tmp_path, {}, prompt, kdf=kdf, use_os_keyring=False).source
        == "passphrase"
    )
    # key file beats the keyring
    create_key_file(tmp_path / "master.key", file_key)
    assert resolve_master_key(tmp_path, {}).source == f"file:{tmp_path / 'master.key'}"
    got = resolve_master_key(tmp_path, {}, prompt, kdf=kdf)
    assert (got.key, got.source) == (file_key, f"file:{tmp_path / 'master.key'}")
    # the environment beats everything
    got = resolve_master_key(
        tmp_path, {"KEYGUARD_MASTER_KEY": env_key.to_base64()}, prompt, kdf=kdf
    )
    assert (got.key, got.source) == (env_key, "env")
    assert len(asked) == 3  # the prompt ran only when the passphrase was the source


def test_key_file_override_from_env(tmp_path: Path) -> None:
    key = MasterKey.generate()
    other = tmp_path / "elsewhere" / "k"
    create_key_file(other, key)
    env = {"KEYGUARD_MASTER_KEY_FILE": str(other)}
    assert resolve_master_key(tmp_path, env, use_os_keyring=False).key == key
    with pytest.raises(ConfigError, match="cannot open"):
        resolve_master_key(tmp_path, {"KEYGUARD_MASTER_KEY_FILE": str(tmp_path / "nope")})


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KEYGUARD_MASTER_KEY"):
        resolve_master_key(tmp_path, {"KEYGUARD_MASTER_KEY": "c2hvcnQ="})


def test_key_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    # opening a FIFO for reading blocks until a writer comes: the check must not wait for one
    os.mkfifo(tmp_path / "master.key", 0o600)
    code = (
        "import sys; from pathlib import Path; from keyguard.crypto.sources import read_key_file\n"
        "from keyguard.errors import ConfigError\n"
        "try:\n    read_key_file(Path(sys.argv[1]))\n"
        "except ConfigError as exc:\n    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "master.key")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "not a regular file" in proc.stdout, proc.stderr


def test_rotating_away_from_the_keyring_removes_its_stale_entry(
    tmp_path: Path, os_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keyring is tried before a passphrase: left behind, the old key there would lock the
    vault after `rotate-master --to passphrase`."""
    from click.testing import CliRunner

    from keyguard.cli.main import cli

    home = tmp_path / "home"
    for var in ("KEYGUARD_MASTER_KEY", "KEYGUARD_PASSPHRASE", "KEYGUARD_MASTER_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KEYGUARD_HOME", str(home))

    def run(*args: str, **env: str) -> str:
        result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
        return result.output

    run("init", "--master", "keyring")
    assert (KEYRING_SERVICE, KEYRING_USER) in os_keyring.entries
    run("vault", "rotate-master", "--to", "passphrase", KEYGUARD_NEW_PASSPHRASE="a passphrase")
    stale = (KEYRING_SERVICE, KEYRING_USER) in os_keyring.entries  # a bool: never print a key
    assert not stale
    run("vault", "status", KEYGUARD_PASSPHRASE="a passphrase")
    run("vault", "rotate-master", "--to", "keyring", KEYGUARD_PASSPHRASE="a passphrase")
    run("vault", "status")
    run("vault", "rotate-master", "--to", "file")
    stale = (KEYRING_SERVICE, KEYRING_USER) in os_keyring.entries
    assert not stale
    run("vault", "status")
