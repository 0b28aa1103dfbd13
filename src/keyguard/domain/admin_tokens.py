"""Admin tokens: the credentials of keyguard's own admin API (``/admin/v1/...``).

Not to be confused with OpenAI admin keys (``sk-admin-...``, :mod:`keyguard.vault.admin_keys`),
which keyguard *holds* to rotate upstream keys. An admin token is what an operator *presents*
to keyguard. Its format mirrors virtual keys: ``kga_`` + 12-character public token id +
44-character base62 secret (262 bits) + 6-character checksum (base62 CRC32 of id + secret),
66 characters in all, so scanners recognise it and typos are rejected before any lookup.
The vault stores only a keyed hash of the secret part.

Scopes: ``read`` may call every ``GET`` route; ``admin`` may also change things.

A token may carry an expiry (``expires_at``); :func:`check_admin_token_state` refuses an expired
token exactly like a revoked one, at the ``now`` it is given. ``last_used_at`` is recorded at
most once per :data:`LAST_USED_INTERVAL` per token (:func:`last_used_due`), so authenticating
stays a read.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from keyguard.domain.keys import BASE62, CHECKSUM_LENGTH, KEY_ID_LENGTH, checksum, new_key_id
from keyguard.errors import KeyFormatError, Unauthenticated

ADMIN_TOKEN_PREFIX = "kga_"
ADMIN_SECRET_LENGTH = 44
ADMIN_TOKEN_LENGTH = len(ADMIN_TOKEN_PREFIX) + KEY_ID_LENGTH + ADMIN_SECRET_LENGTH + CHECKSUM_LENGTH
ADMIN_TOKEN_RE = re.compile(r"kga_[0-9a-z]{12}[0-9A-Za-z]{50}")
TOKEN_ID_RE = re.compile(r"[0-9a-z]{12}")
#: ``last_used_at`` is written at most this often per token (a read otherwise)
LAST_USED_INTERVAL = timedelta(minutes=1)


class AdminScope(str, Enum):
    """What an admin token may do: ``read`` (GET routes only) or ``admin`` (everything)."""

    READ = "read"
    ADMIN = "admin"

    def allows(self, needed: AdminScope) -> bool:
        """True when a token of this scope may call a route that needs ``needed``."""
        return self is AdminScope.ADMIN or needed is AdminScope.READ


@dataclass(frozen=True)
class AdminToken:
    """An admin token's record (never its secret): id, name, scope, who made it, state.

    ``expires_at`` is ``None`` for a token that never expires (every token made before expiry
    existed); ``last_used_at`` is the last recorded successful authentication, to within
    :data:`LAST_USED_INTERVAL`.
    """

    token_id: str
    name: str
    scope: AdminScope
    created_at: datetime
    created_by: str = ""
    revoked_at: datetime | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def expired(self, now: datetime) -> bool:
        """True when ``now`` is at or past ``expires_at``."""
        return self.expires_at is not None and now >= self.expires_at

    def status(self, now: datetime) -> str:
        """``revoked``, ``expired`` or ``active`` at ``now``."""
        if self.revoked:
            return "revoked"
        return "expired" if self.expired(now) else "active"


def check_admin_token_state(token: AdminToken, *, now: datetime) -> None:
    """Raise :class:`Unauthenticated` when ``token`` is revoked or expired at ``now``.

    Call it only for a caller that presented the token's right secret: the message says which
    (as for virtual keys), never anything of the token itself.
    """
    if token.revoked_at is not None:
        raise Unauthenticated("admin token revoked", code="revoked_admin_token")
    if token.expired(now):
        raise Unauthenticated("admin token expired", code="expired_admin_token")


def last_used_due(
    token: AdminToken, now: datetime, interval: timedelta = LAST_USED_INTERVAL
) -> bool:
    """True when a use at ``now`` should be written: never recorded, or recorded at least
    ``interval`` before ``now`` (a clock that went back writes nothing)."""
    return token.last_used_at is None or now - token.last_used_at >= interval


@dataclass(frozen=True)
class AdminTokenParts:
    """A parsed admin token: the public ``token_id`` and the ``secret`` part."""

    token_id: str
    secret: str = ""

    def __repr__(self) -> str:  # never show the secret part
        return f"AdminTokenParts(token_id={self.token_id!r})"


def generate_admin_token() -> tuple[str, str]:
    """Return ``(token_id, token)`` for a new admin token."""
    token_id = new_key_id()
    secret = "".join(secrets.choice(BASE62) for _ in range(ADMIN_SECRET_LENGTH))
    body = token_id + secret
    return token_id, ADMIN_TOKEN_PREFIX + body + checksum(body)


def parse_admin_token(token: str) -> AdminTokenParts:
    """Split and check an admin token (checksum first); the error never contains the token."""
    if len(token) != ADMIN_TOKEN_LENGTH or not ADMIN_TOKEN_RE.fullmatch(token):
        raise KeyFormatError("malformed keyguard admin token")
    body = token[len(ADMIN_TOKEN_PREFIX) : -CHECKSUM_LENGTH]
    if not secrets.compare_digest(checksum(body), token[-CHECKSUM_LENGTH:]):
        raise KeyFormatError("keyguard admin token checksum mismatch (typo or truncated?)")
    return AdminTokenParts(token_id=body[:KEY_ID_LENGTH], secret=body[KEY_ID_LENGTH:])


def is_admin_token(token: str) -> bool:
    """True when ``token`` is a well-formed admin token with a valid checksum."""
    try:
        parse_admin_token(token)
    except KeyFormatError:
        return False
    return True
