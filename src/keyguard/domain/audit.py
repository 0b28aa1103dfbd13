"""Audit records and their hash chain (pure: no I/O; keys and time passed in).

Each record's ``hash`` is HMAC-SHA256 under the vault's audit chain key over the previous
record's hash and the record's canonical content (format version, time, actor, action, subject,
source, outcome, details). The chain, not the ``seq`` column, fixes the order; ``seq`` must run
1, 2, 3, ... A keyed MAC (not a bare hash) means someone with write access to the database but
without the master key cannot rebuild the chain after editing it. The head checkpoint (last seq
and hash, MAC'd separately) catches records cut off the end of the log.

:func:`verify_chain` reports each problem with the seq number and a kind: ``edited``,
``deleted``, ``inserted`` or ``reordered``.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

FORMAT_VERSION = 1
GENESIS = "0" * 64
#: one encoder for every record (``json.dumps`` with these options builds a new one per call);
#: same options, same bytes
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
_escape = json.encoder.encode_basestring_ascii  # what that encoder does to every str


@dataclass(frozen=True)
class AuditEvent:
    """Something to record. ``sensitive`` values are stored only as keyed hashes.

    ``time`` defaults to the vault clock at append time. ``details`` must be JSON-serialisable.
    """

    action: str
    actor: str
    subject: str = ""
    source: str = ""
    outcome: str = "ok"
    details: Mapping[str, Any] = field(default_factory=dict)
    sensitive: Mapping[str, str] = field(default_factory=dict, repr=False)
    time: datetime | None = None


@dataclass(frozen=True)
class AuditRecord:
    """A stored, chained audit record."""

    seq: int
    time: datetime
    action: str
    actor: str
    subject: str
    source: str
    outcome: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str
    format: int = FORMAT_VERSION

    def row(self) -> AuditRow:
        """The record as stored (time as ISO text, details as canonical JSON)."""
        return AuditRow(
            self.seq,
            self.format,
            self.time.isoformat(),
            self.action,
            self.actor,
            self.subject,
            self.source,
            self.outcome,
            _CANONICAL.encode(self.details),
            self.prev_hash,
            self.hash,
        )

    def content(self) -> bytes:
        """The canonical bytes the chain MAC covers (everything but seq and the hashes)."""
        return canonical_content(
            self.format,
            self.time,
            self.action,
            self.actor,
            self.subject,
            self.source,
            self.outcome,
            self.details,
        )


class AuditRow(NamedTuple):
    """A record as the store writes it: the ``audit_log`` columns, in order, with the time as
    ISO text and the details as the canonical JSON the chain MAC covered."""

    seq: int
    format: int
    time: str
    action: str
    actor: str
    subject: str
    source: str
    outcome: str
    details: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class AuditHead:
    """Checkpoint of the chain's end: last seq and hash, with a MAC over both."""

    seq: int
    hash: str
    mac: str


@dataclass(frozen=True)
class ChainProblem:
    """One finding of :func:`verify_chain`."""

    seq: int
    kind: str  # edited | deleted | inserted | reordered
    detail: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.kind}: {self.detail}"


def canonical_content(
    fmt: int,
    time: datetime,
    action: str,
    actor: str,
    subject: str,
    source: str,
    outcome: str,
    details: Mapping[str, Any],
) -> bytes:
    """Deterministic JSON of a record's content."""
    return canonical_parts(fmt, time, action, actor, subject, source, outcome, details)[0]


def canonical_parts(
    fmt: int,
    time: datetime,
    action: str,
    actor: str,
    subject: str,
    source: str,
    outcome: str,
    details: Mapping[str, Any],
) -> tuple[bytes, str, str]:
    """``(canonical content, time ISO text, details JSON)``.

    The content is exactly ``json.dumps({"v", "time", "action", "actor", "subject", "source",
    "outcome", "details"}, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``, built
    from its parts in sorted key order (tested against that form) so the details JSON is
    encoded once and can be stored as is.
    """
    when = time.isoformat()
    det = _CANONICAL.encode(details)
    if type(fmt) is not int:  # anything unusual (a bool, an int subclass): the generic encoder
        doc = {
            "v": fmt,
            "time": when,
            "action": action,
            "actor": actor,
            "subject": subject,
            "source": source,
            "outcome": outcome,
            "details": details,
        }
        return _CANONICAL.encode(doc).encode(), when, det
    esc = _escape
    text = (
        f'{{"action":{esc(action)},"actor":{esc(actor)},"details":{det},'
        f'"outcome":{esc(outcome)},"source":{esc(source)},"subject":{esc(subject)},'
        f'"time":{esc(when)},"v":{int.__repr__(fmt)}}}'
    )
    return text.encode(), when, det


_INF = (float("inf"), float("-inf"))


def json_scalar(value: object) -> str:
    """What the canonical encoder writes for a flat detail value (str, int, float, bool or
    ``None``); rejects NaN, infinities and anything else."""
    kind = type(value)
    if kind is str:
        return _escape(value)  # type: ignore[arg-type]
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)  # type: ignore[arg-type]
    if kind is float:
        if value != value or value in _INF:
            raise ValueError("audit details must not contain NaN or infinity")
        return float.__repr__(value)  # type: ignore[arg-type]
    if kind is bool:
        return "true" if value else "false"
    raise TypeError(f"a uniform audit detail cannot be a {kind.__name__}")


class UniformEncoder:
    """:func:`canonical_parts` (format :data:`FORMAT_VERSION`) for records whose details are
    flat scalars under one fixed set of keys (the gateway's per-request records).

    The key order and the quoted key names are worked out once; a record then costs one
    string join and one format — the same bytes as :func:`canonical_parts` (tested against
    it), so such records verify like any other.
    """

    __slots__ = ("_pairs",)

    def __init__(self, keys: Sequence[str]) -> None:
        if len(set(keys)) != len(keys):
            raise ValueError("detail keys must be distinct")
        order = sorted(range(len(keys)), key=keys.__getitem__)  # json's sort_keys order
        self._pairs = tuple((_escape(keys[i]) + ":", i) for i in order)

    def __call__(
        self,
        when: datetime,
        action: str,
        actor: str,
        subject: str,
        source: str,
        outcome: str,
        values: Sequence[object],
    ) -> tuple[bytes, str, str]:
        """``(canonical content, time ISO text, details JSON)`` for one record; ``values``
        in the order of the keys given to the constructor."""
        when_iso = when.isoformat()
        sc = json_scalar
        det = "{" + ",".join([name + sc(values[i]) for name, i in self._pairs]) + "}"
        esc = _escape
        text = (
            f'{{"action":{esc(action)},"actor":{esc(actor)},"details":{det},'
            f'"outcome":{esc(outcome)},"source":{esc(source)},"subject":{esc(subject)},'
            f'"time":{esc(when_iso)},"v":{FORMAT_VERSION}}}'
        )
        return text.encode(), when_iso, det


def chain_mac(chain_key: bytes, prev_hash: str, content: bytes) -> str:
    """The record hash: HMAC-SHA256(chain key, prev hash || content), hex."""
    return hmac.new(
        chain_key, prev_hash.encode("ascii") + b"\n" + content, hashlib.sha256
    ).hexdigest()


class ChainMac:
    """:func:`chain_mac` with the HMAC key schedule done once (the keyed state is copied per
    record); same output."""

    __slots__ = ("_base",)

    def __init__(self, chain_key: bytes) -> None:
        self._base = hmac.new(chain_key, digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return "ChainMac()"

    def __call__(self, prev_hash: str, content: bytes) -> str:
        h = self._base.copy()
        h.update(prev_hash.encode("ascii") + b"\n" + content)
        return h.hexdigest()


def head_mac(chain_key: bytes, seq: int, last_hash: str) -> str:
    """MAC of the head checkpoint."""
    return hmac.new(chain_key, f"head\n{seq}\n{last_hash}".encode(), hashlib.sha256).hexdigest()


def _increasing_keep(ranks: list[int]) -> set[int]:
    """Indices of one longest strictly increasing subsequence of ``ranks``."""
    tails: list[int] = []
    tail_idx: list[int] = []
    parent = [-1] * len(ranks)
    for i, rank in enumerate(ranks):
        pos = bisect.bisect_left(tails, rank)
        if pos == len(tails):
            tails.append(rank)
            tail_idx.append(i)
        else:
            tails[pos] = rank
            tail_idx[pos] = i
        parent[i] = tail_idx[pos - 1] if pos else -1
    keep: set[int] = set()
    i = tail_idx[-1] if tail_idx else -1
    while i >= 0:
        keep.add(i)
        i = parent[i]
    return keep


def verify_chain(
    records: Sequence[AuditRecord], chain_key: bytes, head: AuditHead | None
) -> list[ChainProblem]:
    """Check a whole log (records in ``seq`` order) against its chain and head checkpoint."""
    problems: list[ChainProblem] = []
    valid = [
        hmac.compare_digest(chain_mac(chain_key, r.prev_hash, r.content()), r.hash) for r in records
    ]
    hashes = {r.hash for r in records}
    successors = {r.prev_hash for r in records}
    head_ok = head is not None and hmac.compare_digest(
        head_mac(chain_key, head.seq, head.hash), head.mac
    )
    if head is not None and not head_ok:
        problems.append(ChainProblem(head.seq, "edited", "the head checkpoint was altered"))
    if head is None and records:
        problems.append(ChainProblem(records[-1].seq, "deleted", "the head checkpoint is missing"))
    trusted_head = head.hash if head is not None and head_ok else None

    # follow the chain from the start: rank = authentic position of each valid record
    by_prev: dict[str, int] = {}
    for i, r in enumerate(records):
        if valid[i] and r.prev_hash not in by_prev:
            by_prev[r.prev_hash] = i
    rank: dict[int, int] = {}
    starts = [GENESIS] + [records[i].prev_hash for i in range(len(records)) if valid[i]]
    for start in starts:
        cursor = by_prev.get(start)
        while cursor is not None and cursor not in rank:
            rank[cursor] = len(rank)
            cursor = by_prev.get(records[cursor].hash)

    expected_seq = 1
    for i, r in enumerate(records):
        gap = r.seq > expected_seq
        if gap:
            missing = f"{expected_seq}..{r.seq - 1}"
            problems.append(ChainProblem(expected_seq, "deleted", f"records {missing} are missing"))
        expected_seq = r.seq + 1
        if not valid[i]:
            referenced = r.hash in successors or r.hash == trusted_head
            kind = "edited" if referenced else "inserted"
            what = "content does not match its hash" if referenced else "not part of the chain"
            problems.append(ChainProblem(r.seq, kind, what))
        elif by_prev.get(r.prev_hash) != i:
            problems.append(ChainProblem(r.seq, "inserted", "a copy of another record"))
        elif not gap and r.prev_hash != GENESIS and r.prev_hash not in hashes:
            problems.append(ChainProblem(r.seq, "deleted", "the record before it is missing"))

    ordered = [i for i in range(len(records)) if i in rank]
    keep = _increasing_keep([rank[i] for i in ordered])
    for pos, i in enumerate(ordered):
        if pos not in keep:
            problems.append(
                ChainProblem(records[i].seq, "reordered", "record is out of chain order")
            )

    if trusted_head is not None and head is not None:
        last = records[-1] if records else None
        if last is None or last.seq < head.seq:
            first_missing = last.seq + 1 if last is not None else 1
            problems.append(
                ChainProblem(
                    first_missing, "deleted", f"records up to {head.seq} are missing from the end"
                )
            )
        elif last.seq > head.seq:
            problems.append(
                ChainProblem(head.seq + 1, "inserted", "records after the head checkpoint")
            )
        elif last.hash != head.hash:
            problems.append(
                ChainProblem(last.seq, "edited", "last record does not match the head checkpoint")
            )
    unique = {(p.seq, p.kind): p for p in problems}
    return [unique[k] for k in sorted(unique)]
