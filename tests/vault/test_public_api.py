"""The vault's public surface: what the CLI, gateway and scanner import."""

from __future__ import annotations

import inspect

import keyguard.crypto
import keyguard.storage
import keyguard.vault


def test_exports_exist() -> None:
    for module in (keyguard.vault, keyguard.crypto, keyguard.storage):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"


def test_vault_facade_methods() -> None:
    expected = {
        "create",
        "open",
        "exists",
        "passphrase_params",
        "add_upstream",
        "add_upstream_version",
        "set_upstream_label",
        "list_upstreams",
        "get_upstream",
        "remove_upstream",
        "upstream_secret",
        "create_key",
        "list_keys",
        "get_key",
        "revoke_key",
        "touch_keys",
        "authenticator",
        "find_managed",
        "match_virtual_key",
        "rotate_kek",
        "rewrap",
        "rotate_master_key",
        "check",
        "append",
        "append_many",
        "clear_caches",
        "close",
    }
    members = {name for name, _ in inspect.getmembers(keyguard.vault.Vault)}
    assert expected <= members


def test_crypto_is_the_only_hazmat_importer() -> None:
    import pathlib

    root = pathlib.Path(keyguard.vault.__file__).parents[1]
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if "cryptography.hazmat" in p.read_text(encoding="utf-8") and p.parent.name != "crypto"
    ]
    assert offenders == []
