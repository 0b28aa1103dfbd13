"""keyguard: keep OpenAI API keys out of code, logs and clients.

The library face::

    import keyguard
    key = keyguard.load_api_key()          # Secret: prints as sk-proj-…wxyz
    client = keyguard.openai_client()      # openai.OpenAI with the key, TLS verified

Attributes are imported lazily so ``import keyguard`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Secret": "keyguard.domain.secret",
    "redact": "keyguard.domain.redaction",
    "RedactingFilter": "keyguard.domain.redaction",
    "install_redaction": "keyguard.domain.redaction",
    "fingerprint": "keyguard.domain.keys",
    "load_api_key": "keyguard.loading",
    "openai_client": "keyguard.loading",
    "async_openai_client": "keyguard.loading",
    "KeyNotConfigured": "keyguard.loading",
    "KeyguardError": "keyguard.errors",
    "ConfigError": "keyguard.errors",
    "KeyFormatError": "keyguard.errors",
    "VaultLocked": "keyguard.errors",
    "DecryptionError": "keyguard.errors",
}

__all__ = [
    "ConfigError",
    "DecryptionError",
    "KeyFormatError",
    "KeyNotConfigured",
    "KeyguardError",
    "RedactingFilter",
    "Secret",
    "VaultLocked",
    "async_openai_client",
    "fingerprint",
    "install_redaction",
    "load_api_key",
    "openai_client",
    "redact",
]

if TYPE_CHECKING:
    from keyguard.domain.keys import fingerprint
    from keyguard.domain.redaction import RedactingFilter, install_redaction, redact
    from keyguard.domain.secret import Secret
    from keyguard.errors import (
        ConfigError,
        DecryptionError,
        KeyFormatError,
        KeyguardError,
        VaultLocked,
    )
    from keyguard.loading import (
        KeyNotConfigured,
        async_openai_client,
        load_api_key,
        openai_client,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keyguard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
