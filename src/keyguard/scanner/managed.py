"""The scanner's port to "keys keyguard manages": look a found key up, revoke it.

The scanner core does not import the vault. The CLI edge passes an object satisfying
:class:`ManagedKeys` (see :mod:`keyguard.scanner.vault_adapter`, or a test double); the core
only calls :meth:`ManagedKeys.lookup` and, with ``--revoke-managed``, :meth:`ManagedKeys.revoke`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from keyguard.domain.secret import Secret
from keyguard.scanner.model import Finding

ManagedKind = Literal["upstream", "virtual"]


@dataclass(frozen=True)
class ManagedKey:
    """A found key that keyguard manages: an upstream credential version or a virtual key."""

    kind: ManagedKind
    key_id: str  # virtual key id, or "<credential name>@v<version>"
    label: str = ""

    def describe(self) -> str:
        """Human text, without key material."""
        what = "upstream credential" if self.kind == "upstream" else "virtual key"
        label = f" ({self.label})" if self.label else ""
        return f"{what} {self.key_id}{label}"


class ManagedKeys(Protocol):
    """What the scanner needs from the vault."""

    def lookup(self, secret: Secret) -> ManagedKey | None:
        """The managed key whose value is ``secret``, or ``None``."""

    def revoke(self, key: ManagedKey, *, actor: str, reason: str) -> str:
        """Revoke a virtual key / mark an upstream credential compromised; return what was done."""


def annotate(findings: Iterable[Finding], keys: ManagedKeys) -> list[Finding]:
    """Set ``managed`` on every finding whose key the vault manages."""
    out = []
    for f in findings:
        hit = keys.lookup(f.secret)
        out.append(replace(f, managed=hit.describe()) if hit else f)
    return out


def revoke_all(
    findings: Iterable[Finding], keys: ManagedKeys, *, actor: str = "keyguard-scan"
) -> list[Finding]:
    """Revoke every managed key found (each once); the action is added to the finding's notes."""
    done: dict[str, str] = {}
    out = []
    for f in findings:
        hit = keys.lookup(f.secret)
        if hit is None:
            out.append(f)
            continue
        if f.fingerprint not in done:
            reason = f"found hardcoded in {f.path}:{f.line} ({f.fingerprint})"
            done[f.fingerprint] = keys.revoke(hit, actor=actor, reason=reason)
        out.append(replace(f, managed=hit.describe(), notes=(*f.notes, done[f.fingerprint])))
    return out
