"""Vault records: upstream credentials and their versions, virtual keys, key specs.

Frozen value objects with no I/O. They hold fingerprints, ids and policy, never key material:
sealed values and secret hashes live only in storage rows the vault reads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from enum import Enum
from functools import cached_property
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from keyguard.domain.keys import ANY_KEY_RE, redacted_form
from keyguard.errors import ConfigError

if TYPE_CHECKING:
    from keyguard.domain.policy import CompiledPolicy

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PROVIDERS = ("openai",)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
_USERINFO_RE = re.compile(r"//[^/?#]*@")


class Label(str, Enum):
    """Stage of an upstream key version; at most one version of a credential holds each label."""

    CURRENT = "CURRENT"
    PENDING = "PENDING"
    PREVIOUS = "PREVIOUS"


class BudgetPeriod(str, Enum):
    """The window a virtual key's ``budget_usd`` applies to."""

    DAILY = "daily"
    MONTHLY = "monthly"
    TOTAL = "total"


def check_name(kind: str, name: str) -> str:
    """Validate a record name (upstream credential or key name); the message names ``kind``."""
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(
            f"{kind} must be 1-64 characters of letters, digits, '.', '_', '@' or '-',"
            " starting with a letter or digit"
        )
    return name


_HEADER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def check_header_id(setting: str, value: str | None) -> str | None:
    """An id sent upstream in a header (organization, project): a short token, or ``None``.

    Refuses whitespace and control characters, so a stored value can never split a header.
    """
    if value is None or value == "":
        return None
    if not _HEADER_ID_RE.fullmatch(value):
        raise ConfigError(
            f"{setting} must be 1-128 characters of letters, digits, '_', '.', ':' or '-'"
        )
    return value


def check_base_url(base_url: str, *, allow_insecure_loopback: bool = False) -> str:
    """An upstream base URL must be https, or http to a loopback host with explicit opt-in."""
    try:
        parts = urlsplit(base_url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        shown = _USERINFO_RE.sub("//***@", base_url)  # never echo a password in the URL
        raise ConfigError(f"base_url {shown!r} is not a valid URL") from None
    if parts.username or parts.password:
        raise ConfigError("base_url must not contain credentials")
    if not host or parts.query or parts.fragment:
        raise ConfigError(f"base_url {base_url!r} must be scheme://host[:port][/path]")
    if parts.scheme == "https":
        return base_url.rstrip("/")
    if parts.scheme == "http":
        if host not in _LOOPBACK_HOSTS and not host.startswith("127."):
            raise ConfigError(f"base_url {base_url!r}: plain http is only allowed to loopback")
        if not allow_insecure_loopback:
            raise ConfigError(
                f"base_url {base_url!r} uses plain http: set allow_insecure_loopback to allow it"
            )
        return base_url.rstrip("/")
    raise ConfigError(f"base_url {base_url!r} must use https")


#: the longest reason kept with a compromised version (longer ones are cut)
COMPROMISE_REASON_MAX = 200
#: the longest source kept with a compromised version (``scan``, ``cli``, ...)
COMPROMISE_SOURCE_MAX = 64
#: labels that put a compromised version in use (the gateway sends CURRENT; PENDING is next)
IN_USE_LABELS = (Label.CURRENT, Label.PENDING)


@dataclass(frozen=True)
class UpstreamVersion:
    """One version of an upstream key: its fingerprint and label, never its value.

    ``compromised_at`` is set (once, for good) when the key is known to have leaked, with a
    short ``compromised_reason`` and the ``compromised_source`` that reported it (never any key
    material: see :func:`compromise_reason`).
    """

    upstream: str
    version: int
    fingerprint: str
    created_at: datetime
    label: Label | None = None
    compromised_at: datetime | None = None
    compromised_reason: str | None = None
    compromised_source: str | None = None

    @property
    def compromised(self) -> bool:
        """True once the version has been marked compromised (permanent)."""
        return self.compromised_at is not None

    def mark_compromised(self, now: datetime, reason: str, source: str) -> UpstreamVersion:
        """This version marked compromised at ``now``; one already marked keeps its first
        time, reason and source (marking is idempotent)."""
        if self.compromised:
            return self
        if now.tzinfo is None:
            raise ConfigError("the time a version was compromised must be timezone-aware")
        return replace(
            self,
            compromised_at=now,
            compromised_reason=compromise_reason(reason),
            compromised_source=compromise_reason(source, limit=COMPROMISE_SOURCE_MAX),
        )


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]+")


def compromise_reason(text: str, *, limit: int = COMPROMISE_REASON_MAX) -> str:
    """A reason (or source) fit to keep with a compromised version and show in listings.

    Control characters become spaces, anything shaped like a key keyguard knows is replaced by
    its redacted form (an operator who pastes the leaked key into ``--reason`` does not store
    it), and the text is cut to ``limit`` characters. Empty text is refused.
    """
    cleaned = " ".join(_CONTROL_RE.sub(" ", text).split())
    cleaned = ANY_KEY_RE.sub(lambda m: redacted_form(m.group(0)), cleaned)
    if not cleaned:
        raise ConfigError("a reason is required to mark a version compromised")
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "…"
    return cleaned


@dataclass(frozen=True)
class UpstreamCredential:
    """An upstream (OpenAI) credential: where to send requests and its key versions."""

    name: str
    base_url: str = DEFAULT_BASE_URL
    provider: str = "openai"
    organization: str | None = None
    project: str | None = None
    allow_insecure_loopback: bool = False
    created_at: datetime | None = None
    last_rotated_at: datetime | None = None
    max_age: timedelta | None = None
    versions: tuple[UpstreamVersion, ...] = ()

    def version_with(self, label: Label) -> UpstreamVersion | None:
        """The version holding ``label``, if any."""
        for v in self.versions:
            if v.label is label:
                return v
        return None

    def version_number(self, version: int) -> UpstreamVersion | None:
        """Version number ``version``, if the credential has it."""
        for v in self.versions:
            if v.version == version:
                return v
        return None

    def compromised_in_use(self) -> tuple[UpstreamVersion, ...]:
        """The CURRENT or PENDING versions marked compromised (CURRENT first): while any is
        left, the credential needs rotating at once."""
        return tuple(
            v
            for label in IN_USE_LABELS
            for v in self.versions
            if v.label is label and v.compromised
        )


def _tuple(values: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(values, str):  # a lone string is a common slip: never split it into characters
        return (values,)
    return tuple(values)


@dataclass(frozen=True)
class KeySpec:
    """What a new virtual key may do; validated (and its policy compiled) on construction."""

    name: str
    upstream: str
    owner: str = ""
    allowed_models: tuple[str, ...] = ()
    allowed_endpoints: tuple[str, ...] = ()
    allowed_cidrs: tuple[str, ...] = ()
    expires_at: datetime | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    budget_usd: float | None = None
    budget_period: BudgetPeriod = BudgetPeriod.MONTHLY
    max_age: timedelta | None = None

    def __post_init__(self) -> None:
        from keyguard.domain.policy import compile_policy

        check_name("key name", self.name)
        check_name("upstream name", self.upstream)
        for attr in ("allowed_models", "allowed_endpoints", "allowed_cidrs"):
            object.__setattr__(self, attr, _tuple(getattr(self, attr)))
        object.__setattr__(self, "budget_period", BudgetPeriod(self.budget_period))
        if len(self.owner) > 200 or any(ord(c) < 32 for c in self.owner):
            raise ConfigError("owner must be at most 200 printable characters")
        for attr in ("rpm", "tpm", "max_concurrency"):
            value = getattr(self, attr)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"{attr} must be a positive integer")
        if self.budget_usd is not None and not self.budget_usd >= 0:
            raise ConfigError("budget_usd must be zero or more")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ConfigError("expires_at must be timezone-aware")
        if self.max_age is not None and self.max_age <= timedelta(0):
            raise ConfigError("max_age must be positive")
        compile_policy(self.allowed_models, self.allowed_endpoints, self.allowed_cidrs)


@dataclass(frozen=True)
class VirtualKey:
    """A virtual key as the vault stores it: id, scope, limits and state; never its secret."""

    key_id: str
    name: str
    upstream: str
    created_at: datetime
    owner: str = ""
    allowed_models: tuple[str, ...] = ()
    allowed_endpoints: tuple[str, ...] = ()
    allowed_cidrs: tuple[str, ...] = ()
    expires_at: datetime | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    budget_usd: float | None = None
    budget_period: BudgetPeriod = BudgetPeriod.MONTHLY
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    max_age: timedelta | None = None

    @classmethod
    def from_spec(cls, key_id: str, spec: KeySpec, created_at: datetime) -> VirtualKey:
        """The record of a new key made from ``spec`` (every spec field carries over by name)."""
        return cls(
            key_id=key_id,
            created_at=created_at,
            **{f.name: getattr(spec, f.name) for f in fields(spec)},
        )

    @property
    def revoked(self) -> bool:
        """True once the key has been revoked (permanent)."""
        return self.revoked_at is not None

    def expired(self, now: datetime) -> bool:
        """True when ``now`` is at or past ``expires_at``."""
        return self.expires_at is not None and now >= self.expires_at

    @cached_property
    def policy(self) -> CompiledPolicy:
        """The key's allowlists compiled once (globs to regexes, CIDRs to networks)."""
        from keyguard.domain.policy import compile_policy

        return compile_policy(self.allowed_models, self.allowed_endpoints, self.allowed_cidrs)


@dataclass(frozen=True)
class KeySecretHash:
    """A keyed hash of a virtual key's secret part; several may be valid during a rotation."""

    key_id: str
    digest: bytes = field(repr=False)
    created_at: datetime
    valid_until: datetime | None = None


@dataclass(frozen=True)
class ManagedMatch:
    """What the scanner learns about a key the vault manages (never the key itself)."""

    kind: str  # "upstream" or "virtual_key"
    name: str
    key_id: str | None = None
    version: int | None = None
    label: Label | None = None
    revoked: bool = False

    @property
    def description(self) -> str:
        """One line for reports: which record holds the key."""
        if self.kind == "upstream":
            label = f", {self.label.value}" if self.label else ""
            return f"upstream credential {self.name!r} version {self.version}{label}"
        state = ", revoked" if self.revoked else ""
        return f"virtual key {self.key_id} ({self.name!r}{state})"
