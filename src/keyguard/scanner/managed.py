"""The scanner's port to "keys keyguard manages": look a found key up, revoke it.

The scanner core does not import the vault. The CLI edge passes an object satisfying
:class:`ManagedKeys` — normally :class:`keyguard.scanner.vault_port.VaultManagedKeys` around the
real vault, or a test double; the core only calls :meth:`ManagedKeys.lookup` and, with
``--revoke-managed``, :meth:`ManagedKeys.revoke`. Matches are the domain's
:class:`~keyguard.domain.records.ManagedMatch` (which never holds key material).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol

from keyguard.domain.records import ManagedMatch
from keyguard.domain.secret import Secret
from keyguard.scanner.model import Finding

ManagedKey = ManagedMatch

#: ``ManagedMatch.kind`` of keyguard admin-API tokens (the domain knows only upstream and
#: virtual keys; the vault adapter makes these matches and this module describes them)
ADMIN_TOKEN = "admin_token"


class ManagedKeys(Protocol):
    """What the scanner needs from the vault."""

    def lookup(self, secret: Secret) -> ManagedMatch | None:
        """The managed key whose value is ``secret``, or ``None``."""

    def revoke(self, key: ManagedMatch, *, actor: str, reason: str) -> str:
        """Revoke a virtual key / act on a leaked upstream key; return what was done."""


def describe(match: ManagedMatch) -> str:
    """One line for reports (the domain's description knows upstream and virtual keys)."""
    if match.kind == ADMIN_TOKEN:
        bits = [repr(match.name)] if match.name else []
        if match.revoked:
            bits.append("revoked")
        return f"admin token {match.key_id}" + (f" ({', '.join(bits)})" if bits else "")
    return match.description


def _lookup_each_key_once(
    findings: Iterable[Finding], keys: ManagedKeys
) -> list[tuple[Finding, ManagedMatch | None]]:
    """Every finding with its managed key; the vault is asked once per distinct key."""
    hits: dict[str, ManagedMatch | None] = {}
    out = []
    for f in findings:
        if f.fingerprint not in hits:
            hits[f.fingerprint] = keys.lookup(f.secret)
        out.append((f, hits[f.fingerprint]))
    return out


def annotate(findings: Iterable[Finding], keys: ManagedKeys) -> list[Finding]:
    """Set ``managed`` on every finding whose key the vault manages."""
    return [
        replace(f, managed=describe(hit)) if hit else f
        for f, hit in _lookup_each_key_once(findings, keys)
    ]


def revoke_all(
    findings: Iterable[Finding], keys: ManagedKeys, *, actor: str = "keyguard-scan"
) -> list[Finding]:
    """Revoke every managed key found (each once); the action is added to the finding's notes."""
    done: dict[str, str] = {}
    out = []
    for f, hit in _lookup_each_key_once(findings, keys):
        if hit is None:
            out.append(f)
            continue
        if f.fingerprint not in done:
            where = f"{f.path}:{f.line}" + (f" @{f.commit[:12]}" if f.commit else "")
            reason = f"found hardcoded at {where} ({f.fingerprint})"
            done[f.fingerprint] = keys.revoke(hit, actor=actor, reason=reason)
        out.append(replace(f, managed=describe(hit), notes=(*f.notes, done[f.fingerprint])))
    return out
