"""Build the vault from settings: the one place that turns configuration into objects.

Used by the CLI, the library (``load_api_key``'s vault source) and the gateway's ``serve``.
It is an edge module: it receives the environment mapping explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from keyguard.config import Settings
from keyguard.errors import ConfigError, VaultLocked

ENV_PASSPHRASE = "KEYGUARD_PASSPHRASE"

#: asks for the passphrase; the argument says whether to ask twice (a new passphrase)
PassphrasePrompt = Callable[[bool], str]

if TYPE_CHECKING:  # kept lazy so `keyguard --help` stays fast
    from keyguard.crypto.master import MasterKey
    from keyguard.storage.ports import VaultStore
    from keyguard.vault.vault import Vault


def ensure_home(home: Path) -> Path:
    """Create the keyguard home with mode 0700 (and tighten an existing one we own)."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = home.stat()
    if os.name == "posix" and st.st_uid == os.getuid() and st.st_mode & 0o077:
        home.chmod(0o700)
    return home


def open_store(settings: Settings) -> VaultStore:
    """Open the store named by ``settings.database_url`` (the home is created first)."""
    from keyguard.storage import open_store as _open

    if settings.database_url.startswith("sqlite:"):
        ensure_home(settings.home)
    return _open(settings.database_url, base_dir=settings.home)


def _passphrase(env: Mapping[str, str], prompt: PassphrasePrompt | None, confirm: bool) -> str:
    value = env.get(ENV_PASSPHRASE)
    if value:
        return value
    if prompt is None:
        raise VaultLocked(f"the vault needs a passphrase: set {ENV_PASSPHRASE}")
    return prompt(confirm)


def create_vault(
    settings: Settings,
    env: Mapping[str, str],
    *,
    passphrase: PassphrasePrompt | None = None,
    master_source: str = "file",
) -> Vault:
    """Create a new vault. ``master_source`` picks where the new master key lives:

    ``file`` (``<home>/master.key``, 0600; default), ``passphrase`` (scrypt, parameters stored
    with the vault), ``keyring`` (the OS keyring). If ``KEYGUARD_MASTER_KEY`` is set, that key
    is used and nothing is written.
    """
    from keyguard.crypto.master import MasterKey, ScryptParams
    from keyguard.crypto.sources import (
        ENV_MASTER_KEY,
        create_key_file,
        key_file_path,
        store_in_os_keyring,
    )
    from keyguard.errors import AlreadyExists
    from keyguard.vault.vault import Vault

    store = open_store(settings)
    try:
        if Vault.exists(store):
            raise AlreadyExists(f"a vault already exists at {settings.safe_database_url}")
        kdf = None
        if env.get(ENV_MASTER_KEY):
            master = MasterKey.from_base64(env[ENV_MASTER_KEY], setting=ENV_MASTER_KEY)
        elif master_source == "passphrase":
            kdf = ScryptParams.new()
            master = kdf.derive(_passphrase(env, passphrase, True))
        elif master_source == "keyring":
            master = MasterKey.generate()
            store_in_os_keyring(master)
        elif master_source == "file":
            master = MasterKey.generate()
            path = key_file_path(settings.home, env)
            if path.exists():
                raise ConfigError(
                    f"{path} exists but there is no vault: move it away or set "
                    f"{ENV_MASTER_KEY} to it"
                )
            create_key_file(path, master)
        else:
            raise ConfigError(f"unknown master key source {master_source!r}")
        return Vault.create(store, master, kdf=kdf, actor=os_actor(env), source="cli")
    except BaseException:
        store.close()
        raise


def os_actor(env: Mapping[str, str]) -> str:
    """Who is acting, for audit records: the OS user running this process."""
    import getpass

    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"user:{env.get('USER') or 'unknown'}"


def open_vault(
    settings: Settings,
    env: Mapping[str, str],
    *,
    passphrase: PassphrasePrompt | None = None,
    source: str = "cli",
) -> Vault:
    """Unlock the existing vault; :class:`VaultLocked` says what to do when it can't."""
    from keyguard.crypto.sources import resolve_master_key
    from keyguard.vault.vault import Vault

    path = settings.db_path
    if path is not None and not path.exists():
        raise VaultLocked(f"no vault at {path}: run 'keyguard init' (or 'keyguard up')")
    store = open_store(settings)
    try:
        if not Vault.exists(store):
            raise VaultLocked(f"no vault in {settings.safe_database_url}: run 'keyguard init'")
        kdf = Vault.passphrase_params(store)
        resolved = resolve_master_key(
            settings.home, env, lambda: _passphrase(env, passphrase, False), kdf=kdf
        )
        try:
            return Vault.open(store, resolved.key, actor=os_actor(env), source=source)
        except VaultLocked:
            vault = _finish_interrupted_rotation(settings, env, store, source)
            if vault is None:
                raise
            return vault
    except BaseException:
        store.close()
        raise


def _finish_interrupted_rotation(
    settings: Settings, env: Mapping[str, str], store: VaultStore, source: str
) -> Vault | None:
    """A crash between ``rotate-master`` switching the vault and renaming the key file leaves
    ``master.key.new`` holding the key that opens the vault: use it and finish the rename."""
    from keyguard.crypto.sources import key_file_path, read_key_file
    from keyguard.vault.vault import Vault

    path = key_file_path(settings.home, env)
    pending = pending_key_file(path)
    if not pending.exists():
        return None
    vault = Vault.open(store, read_key_file(pending), actor=os_actor(env), source=source)
    install_new_key_file(path)
    return vault


def open_vault_if_present(settings: Settings, env: Mapping[str, str]) -> Vault | None:
    """The vault, if one exists and opens without prompting; else ``None``."""
    path = settings.db_path
    if path is not None and not path.exists():
        return None
    try:
        return open_vault(settings, env, passphrase=None, source="library")
    except (VaultLocked, ConfigError):
        return None


def pending_key_file(path: Path) -> Path:
    """Where a new master key waits during ``vault rotate-master`` (``master.key.new``)."""
    return path.with_name(path.name + ".new")


def write_pending_key_file(path: Path, key: MasterKey) -> None:
    """Store the next master key beside the current one before the vault switches to it."""
    from keyguard.crypto.sources import create_key_file

    pending = pending_key_file(path)
    pending.unlink(missing_ok=True)
    create_key_file(pending, key)


def install_new_key_file(path: Path) -> None:
    """Atomically replace the key file with the pending one (after the vault switched)."""
    os.replace(pending_key_file(path), path)
