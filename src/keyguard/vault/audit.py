"""The vault's audit log: append (one or a batch), list, verify.

Records are hash-chained with a keyed MAC (see :mod:`keyguard.domain.audit`) under keys derived
from the vault's audit key, which is sealed in the vault. Before a record is stored every text
field is passed through :func:`keyguard.domain.redaction.redact` (known secret values and
key-shaped strings are replaced by their redacted forms), and each ``sensitive`` value is
replaced by a keyed pseudonym (:meth:`AuditLog.pseudonymise`): equal inputs give equal
pseudonyms, so records can be correlated without storing the raw value.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeAlias

from keyguard.domain import audit as chain
from keyguard.domain.audit import (
    AuditEvent,
    AuditHead,
    AuditRecord,
    AuditRow,
    ChainProblem,
)
from keyguard.domain.redaction import redact_cached
from keyguard.storage.ports import VaultStore

_MAX_DEPTH = 8


@dataclass(frozen=True)
class AuditReport:
    """Result of :meth:`AuditLog.verify`."""

    ok: bool
    count: int
    problems: tuple[ChainProblem, ...]

    def __str__(self) -> str:
        if self.ok:
            return f"audit log intact: {self.count} records"
        lines = [f"audit log FAILED verification ({len(self.problems)} problems):"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


_INF = (float("inf"), float("-inf"))


def _clean(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of ``value`` with every string redacted; rejects other types."""
    if depth > _MAX_DEPTH:
        raise ValueError("audit details are nested too deeply")
    kind = type(value)  # exact types first: the common flat values skip the ABC checks
    if kind is str:
        return redact_cached(value)
    if value is None or kind is int or kind is bool:
        return value
    if kind is float:
        if value != value or value in _INF:
            raise ValueError("audit details must not contain NaN or infinity")
        return value
    if kind is dict:
        return _clean_map(value, depth)
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if value != value or value in _INF:
            raise ValueError("audit details must not contain NaN or infinity")
        return value
    if isinstance(value, str):
        return redact_cached(value)
    if isinstance(value, Mapping):
        return _clean_map(value, depth)
    if isinstance(value, list | tuple):
        return [_clean(v, depth + 1) for v in value]
    raise TypeError(f"audit details cannot hold {type(value).__name__} values")


def _clean_flat(value: dict[Any, Any]) -> dict[str, Any] | None:
    """:func:`_clean` of a flat dict (str keys; str, int, float, bool or ``None`` values) in one
    pass — the shape of nearly every record (a gateway request's); ``None`` for anything else."""
    out = {}
    r = redact_cached
    for k, v in value.items():
        if type(k) is not str:
            return None
        kind = type(v)
        if kind is str:
            v = r(v)
        elif kind is float:
            if v != v or v in _INF:
                raise ValueError("audit details must not contain NaN or infinity")
        elif not (v is None or kind is int or kind is bool):
            return None
        out[r(k)] = v
    return out


def _clean_map(value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
    out = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise TypeError("audit detail keys must be strings")
        out[redact_cached(k)] = _clean(v, depth + 1)
    return out


#: a record to chain: time, action, actor, subject, source, outcome, details (a dict, or the
#: values of a uniform record)
_Item: TypeAlias = tuple[datetime, str, str, str, str, str, Any]
_Encode: TypeAlias = Callable[[datetime, str, str, str, str, str, Any], tuple[bytes, str, str]]


def _canonical_v1(
    when: datetime, action: str, actor: str, subject: str, source: str, outcome: str, details: Any
) -> tuple[bytes, str, str]:
    return chain.canonical_parts(
        chain.FORMAT_VERSION, when, action, actor, subject, source, outcome, details
    )


class AuditLog:
    """Append-only, verifiable audit log of one vault."""

    def __init__(self, store: VaultStore, audit_key: bytes, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._chain_key = hmac.new(audit_key, b"keyguard audit chain v1", hashlib.sha256).digest()
        self._pseudo_key = hmac.new(audit_key, b"keyguard pseudonym v1", hashlib.sha256).digest()
        self._chain_mac = chain.ChainMac(self._chain_key)
        self._clock = clock

    def __repr__(self) -> str:
        return "AuditLog()"

    def pseudonymise(self, value: str) -> str:
        """A keyed, non-reversible stand-in for a sensitive value (stable within a vault)."""
        mac = hmac.new(self._pseudo_key, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return "hmac:" + mac.hexdigest()[:32]

    def _prepare(self, event: AuditEvent) -> _Item:
        when = event.time if event.time is not None else self._clock()
        if when.tzinfo is not timezone.utc:
            if when.tzinfo is None:
                raise ValueError("audit times must be timezone-aware")
            when = when.astimezone(timezone.utc)
        raw = event.details
        details = _clean_flat(raw) if type(raw) is dict else None
        if details is None:
            details = _clean(dict(raw))
        for name, value in event.sensitive.items():
            details[name] = self.pseudonymise(value)
        r = redact_cached
        return (
            when,
            r(event.action),
            r(event.actor),
            r(event.subject),
            r(event.source),
            r(event.outcome),
            details,
        )

    def append(self, event: AuditEvent) -> AuditRecord:
        """Append one record; returns it as stored."""
        return self.append_many([event])[0]

    def append_many(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        """Append a batch in one transaction (the gateway batches per-request records)."""
        items = [self._prepare(e) for e in events]
        rows = self._write(items, _canonical_v1)
        return [
            AuditRecord(
                row.seq,
                when,
                action,
                actor,
                subject,
                source,
                outcome,
                details,
                row.prev_hash,
                row.hash,
            )
            for row, (when, action, actor, subject, source, outcome, details) in zip(
                rows, items, strict=True
            )
        ]

    def uniform(self, action: str, keys: Sequence[str]) -> UniformAppender:
        """A fast appender for records of one ``action`` whose details are flat scalars under
        the fixed ``keys`` (the gateway's per-request records); see :class:`UniformAppender`."""
        return UniformAppender(self, action, keys)

    def _write(self, items: Sequence[_Item], encode: _Encode) -> list[AuditRow]:
        """Chain ``items`` after the head and store them, in one transaction."""
        if not items:
            return []
        mac = self._chain_mac
        fmt = chain.FORMAT_VERSION
        with self._store.transaction():
            head = self._store.audit_head()
            seq, prev = (head.seq, head.hash) if head is not None else (0, chain.GENESIS)
            rows = []
            for when, action, actor, subject, source, outcome, details in items:
                seq += 1
                content, when_iso, details_json = encode(
                    when, action, actor, subject, source, outcome, details
                )
                digest = mac(prev, content)
                rows.append(
                    AuditRow(
                        seq,
                        fmt,
                        when_iso,
                        action,
                        actor,
                        subject,
                        source,
                        outcome,
                        details_json,
                        prev,
                        digest,
                    )
                )
                prev = digest
            new_head = AuditHead(seq, prev, chain.head_mac(self._chain_key, seq, prev))
            self._store.append_audit(rows, new_head)
        return rows

    def list(self, *, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        """Records with ``seq > after_seq``, oldest first."""
        return self._store.list_audit(after_seq, limit)

    def verify(self) -> AuditReport:
        """Check the whole chain; problems name the seq number and the kind of tampering."""
        head = self._store.audit_head()
        records = self._store.list_audit()
        problems = chain.verify_chain(records, self._chain_key, head)
        return AuditReport(ok=not problems, count=len(records), problems=tuple(problems))


def details_json(record: AuditRecord) -> str:
    """The details of a record as compact JSON (for CLI output)."""
    return json.dumps(record.details, sort_keys=True, separators=(",", ":"))


def _prerendered(
    when: Any, action: str, actor: str, subject: str, source: str, outcome: str, details: Any
) -> tuple[bytes, str, str]:
    """The encoder of :meth:`UniformAppender.append_rendered`: the parts as given."""
    content, details_json = details
    return content, when, details_json


class UniformAppender:
    """Appends records of one action with flat details under fixed keys, several times
    cheaper per record than :meth:`AuditLog.append_many` and chained and verified exactly
    like its records.

    Each row is ``(time, actor, subject, source, outcome, values)`` with ``values`` in the
    order of ``keys``: str, int, float, bool or ``None``. Every text (and string value) is
    redacted as :meth:`AuditLog.append_many` does; times must be timezone-aware.
    """

    def __init__(self, log: AuditLog, action: str, keys: Sequence[str]) -> None:
        r = redact_cached
        self._log = log
        self._action = r(action)
        self._encode = chain.UniformEncoder([r(k) for k in keys])
        self._width = len(keys)

    def __repr__(self) -> str:
        return f"UniformAppender({self._action!r})"

    def append(self, rows: Sequence[tuple[datetime, str, str, str, str, Sequence[object]]]) -> int:
        """Append ``rows`` in one transaction; returns how many were written."""
        r = redact_cached
        action = self._action
        width = self._width
        utc = timezone.utc
        items: list[_Item] = []
        for when, actor, subject, source, outcome, values in rows:
            if when.tzinfo is not utc:
                if when.tzinfo is None:
                    raise ValueError("audit times must be timezone-aware")
                when = when.astimezone(utc)
            if len(values) != width:
                raise ValueError(f"expected {width} detail values, got {len(values)}")
            values = [r(v) if type(v) is str else v for v in values]  # type: ignore[arg-type]
            items.append((when, action, r(actor), r(subject), r(source), r(outcome), values))
        return len(self._log._write(items, self._encode))

    def append_rendered(self, rows: Sequence[tuple[str, str, str, str, str, bytes, str]]) -> int:
        """Append rows rendered elsewhere — the native edge renders its ``gateway.request``
        records exactly as :meth:`append` would (checked against :class:`UniformEncoder` by
        tests/edge) — as ``(time ISO, actor, subject, source, outcome, canonical content,
        details JSON)``, already redacted. Chained and stored like :meth:`append`'s rows, in
        one transaction; ``audit verify`` recomputes every record from its columns, so a row
        whose content does not match them would be reported."""
        action = self._action
        items: list[_Item] = [
            (when_iso, action, actor, subject, source, outcome, (content, details))  # type: ignore[misc]
            for when_iso, actor, subject, source, outcome, content, details in rows
        ]
        return len(self._log._write(items, _prerendered))
