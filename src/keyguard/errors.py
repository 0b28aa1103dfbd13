"""keyguard's error tree.

Every error keyguard raises on purpose derives from :class:`KeyguardError`. Messages and
attributes may carry a key id or a fingerprint, never key material::

    KeyguardError
      ConfigError            a setting is missing or invalid (names the setting, never a secret)
      KeyFormatError         a value does not have the shape of the expected key
      VaultError
        VaultLocked          no master key, or the master key does not open the vault
        DecryptionError      any integrity failure: bit flip, truncation, wrong key, wrong AAD
        KeyNotFound          no such upstream credential, version or virtual key
        AlreadyExists        a record with that name already exists
      StorageError
        StorageUnavailable   the store cannot be reached or opened
        ConcurrentUpdate     a compare-and-set lost a race
      AccessDenied
        Unauthenticated      401: missing, malformed, unknown, expired or revoked key
        Forbidden            403: IP, model or endpoint not allowed
        RateLimited          429: a limit or budget is exhausted (carries retry_after)
      UpstreamError
        UpstreamUnavailable  502: the upstream could not be reached or answered badly
        UpstreamTimeout      504: the upstream did not answer in time
      ScanError              a scan could not run (bad path, not a git repository, ...)

The CLI maps these to exit codes in one table (``keyguard.cli.errors``); the gateway maps them
to HTTP statuses in one table (``keyguard.gateway.errors``). Programming mistakes stay
``TypeError``/``ValueError``.
"""

from __future__ import annotations


class KeyguardError(Exception):
    """Base class of every error keyguard raises on purpose."""


class ConfigError(KeyguardError):
    """A setting is missing or invalid. The message names the setting, never a secret value."""


class KeyFormatError(KeyguardError, ValueError):
    """A value does not have the shape of the key that was expected."""


class VaultError(KeyguardError):
    """Base class of vault errors."""


class VaultLocked(VaultError):
    """The vault cannot be opened: no master key was found, or it is the wrong one."""


class DecryptionError(VaultError):
    """A sealed value failed its integrity check.

    Raised for every kind of failure (tampering, truncation, wrong key, wrong associated data)
    with the same message, so the error itself leaks nothing about which check failed.
    """

    def __init__(self, message: str = "decryption failed: wrong key or corrupted data") -> None:
        super().__init__(message)


class KeyNotFound(VaultError, KeyError):
    """No such upstream credential, version or virtual key."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want a plain message
        return str(self.args[0]) if self.args else "not found"


class AlreadyExists(VaultError):
    """A record with that name already exists."""


class StorageError(KeyguardError):
    """Base class of storage errors; driver errors are wrapped in one of these."""


class StorageUnavailable(StorageError):
    """The store cannot be reached or opened."""


class ConcurrentUpdate(StorageError):
    """A compare-and-set lost a race with another writer."""


class AccessDenied(KeyguardError):
    """A request was refused by policy."""

    status = 403
    code = "access_denied"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class Unauthenticated(AccessDenied):
    """401: the key is missing, malformed, unknown, expired or revoked."""

    status = 401
    code = "invalid_api_key"


class Forbidden(AccessDenied):
    """403: the key is valid but not allowed here (IP, model or endpoint)."""

    status = 403
    code = "forbidden"


class RateLimited(AccessDenied):
    """429: a rate limit or budget is exhausted."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class UpstreamError(KeyguardError):
    """The upstream (OpenAI) could not be used."""

    status = 502


class UpstreamUnavailable(UpstreamError):
    """502: the upstream could not be reached, refused TLS, or answered badly."""

    status = 502


class UpstreamTimeout(UpstreamError):
    """504: the upstream did not answer in time."""

    status = 504


class ScanError(KeyguardError):
    """A scan could not run."""
