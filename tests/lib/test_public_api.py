"""The package's curated public surface."""

from __future__ import annotations

import keyguard


def test_all_exports_resolve() -> None:
    assert sorted(keyguard.__all__) == keyguard.__all__
    for name in keyguard.__all__:
        assert getattr(keyguard, name) is not None


def test_errors_share_one_base() -> None:
    for name in ("ConfigError", "KeyFormatError", "VaultLocked", "DecryptionError",
                 "KeyNotConfigured"):
        assert issubclass(getattr(keyguard, name), keyguard.KeyguardError)
