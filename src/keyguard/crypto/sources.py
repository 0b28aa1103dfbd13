"""Where the master key comes from: environment value, key file, OS keyring, passphrase.

Nothing here reads ``os.environ``: the edge (CLI, app factory) passes the environment mapping and
a passphrase prompt in. :func:`resolve_master_key` tries the sources in this order and uses the
first one that is present:

1. ``KEYGUARD_MASTER_KEY`` in ``env``: base64 of 32 bytes.
2. The key file: ``KEYGUARD_MASTER_KEY_FILE`` in ``env``, else ``<home>/master.key``. It must be
   a regular file owned by the current user with mode 0600 (no group/other access), otherwise a
   :class:`ConfigError` says to ``chmod 600`` it -- a readable key file is never used silently.
3. The OS keyring (``keyring`` package, service ``keyguard``, user ``master-key``), when
   ``use_os_keyring`` is true and the package and a backend are available — but never for a
   passphrase-protected vault (one with scrypt parameters): its key comes from the passphrase,
   and the one keyring entry per OS user may hold another vault's key or a stale one.
4. A passphrase from the ``passphrase`` callback, when the vault has scrypt parameters (``kdf``).

When none is present, :class:`VaultLocked` lists the ways to provide one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from keyguard.crypto.master import MasterKey, ScryptParams
from keyguard.errors import ConfigError, VaultLocked

ENV_MASTER_KEY = "KEYGUARD_MASTER_KEY"
ENV_MASTER_KEY_FILE = "KEYGUARD_MASTER_KEY_FILE"
KEY_FILE_NAME = "master.key"
KEYRING_SERVICE = "keyguard"
KEYRING_USER = "master-key"


@dataclass(frozen=True)
class ResolvedMasterKey:
    """A master key and the source it came from (``env``, ``file:<path>``, ``keyring``, ...)."""

    key: MasterKey
    source: str


def key_file_path(home: Path, env: Mapping[str, str]) -> Path:
    """The key file to use: ``KEYGUARD_MASTER_KEY_FILE`` or ``<home>/master.key``."""
    override = env.get(ENV_MASTER_KEY_FILE)
    return Path(override) if override else home / KEY_FILE_NAME


def create_key_file(path: Path, key: MasterKey) -> None:
    """Write ``key`` to a new file with mode 0600, atomically; never replaces an existing file.

    The key is written to a temporary file (0600 from the start, in the same directory),
    fsynced, then linked into place, so a crash never leaves a partial key file behind.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot create master key file {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.to_base64().encode("ascii") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ConfigError(f"key file {path} already exists; not overwriting it") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can fsync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_key_file(path: Path) -> MasterKey:
    """Read a key file, refusing one that group or others can access or another user owns."""
    # O_NONBLOCK: a FIFO in its place must not block the open (it is refused below)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ConfigError(f"cannot open master key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())  # checked on the open file: no race with a chmod or swap
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"master key file {path} is not a regular file")
        if os.name == "posix":
            if st.st_mode & 0o077:
                raise ConfigError(
                    f"master key file {path} is accessible by group or others (mode "
                    f"{stat.S_IMODE(st.st_mode):04o}); refusing to use it. Run: chmod 600 {path}"
                )
            if st.st_uid != os.getuid():
                raise ConfigError(f"master key file {path} is owned by another user")
        raw = fh.read(4096)
    return MasterKey.from_base64(raw.decode("ascii", "replace"), setting=f"key file {path}")


def read_os_keyring() -> MasterKey | None:
    """The master key stored in the OS keyring, or ``None`` (no package, backend or entry)."""
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        return None
    try:
        value = keyring.get_password(KEYRING_SERVICE, KEYRING_USER)
    except (KeyringError, RuntimeError, OSError):
        return None
    if not value:
        return None
    return MasterKey.from_base64(value, setting="master key in the OS keyring")


def delete_from_os_keyring() -> bool:
    """Remove keyguard's master-key entry from the OS keyring; True if there was one."""
    if read_os_keyring() is None:
        return False
    import keyring
    from keyring.errors import KeyringError, PasswordDeleteError

    try:
        keyring.delete_password(KEYRING_SERVICE, KEYRING_USER)
    except PasswordDeleteError:
        return False
    except (KeyringError, RuntimeError, OSError) as exc:
        raise ConfigError(
            f"cannot remove the old master key from the OS keyring: {type(exc).__name__}"
        ) from None
    return True


def store_in_os_keyring(key: MasterKey) -> None:
    """Save the master key in the OS keyring (service ``keyguard``)."""
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        raise ConfigError("the OS keyring needs the 'keyring' package: keyguard[keyring]") from None
    try:
        keyring.set_password(KEYRING_SERVICE, KEYRING_USER, key.to_base64())
    except (KeyringError, RuntimeError, OSError) as exc:
        raise ConfigError(f"cannot write to the OS keyring: {type(exc).__name__}") from None


def resolve_master_key(
    home: Path,
    env: Mapping[str, str],
    passphrase: Callable[[], str] | None = None,
    *,
    kdf: ScryptParams | None = None,
    use_os_keyring: bool = True,
) -> ResolvedMasterKey:
    """Find the master key in the documented order (see the module docstring).

    ``kdf`` is the vault's scrypt parameters (``Vault.passphrase_params(store)``); without them
    the passphrase source is skipped. Raises :class:`ConfigError` for a source that is present
    but unusable, :class:`VaultLocked` when no source is present.
    """
    value = env.get(ENV_MASTER_KEY)
    if value:
        return ResolvedMasterKey(MasterKey.from_base64(value, setting=ENV_MASTER_KEY), "env")
    path = key_file_path(home, env)
    if env.get(ENV_MASTER_KEY_FILE) or path.exists() or path.is_symlink():
        return ResolvedMasterKey(read_key_file(path), f"file:{path}")
    if use_os_keyring and kdf is None:
        key = read_os_keyring()
        if key is not None:
            return ResolvedMasterKey(key, "keyring")
    if passphrase is not None and kdf is not None:
        return ResolvedMasterKey(kdf.derive(passphrase()), "passphrase")
    raise VaultLocked(
        f"no master key found: set {ENV_MASTER_KEY}, create {path} with 'keyguard init',"
        " store one in the OS keyring, or use a passphrase-protected vault"
    )
