"""The edge's per-request records: into the audit log, and into the usage/spend counters.

The edge writes one JSON line per request it answered itself (``Record`` in
``native/edge/src/protocol.rs``). The edge renders each record's audit row exactly as the core
would (``native/edge/src/audit.rs``, checked against :class:`~keyguard.domain.audit.
UniformEncoder` by tests/edge) and prices the usage it saw (``pricing.rs``), so this side only
chains, stores and counts:

* the audit row: checked once more for anything to redact (a record that is not clean, or that
  the edge did not render, is rendered here from its fields, as the core renders its own);
* usage: the edge's ``tokens``/``cost_nano`` when the response reported usage, else
  :func:`~keyguard.gateway.limits.settle_figures` with the request's estimate, as the core.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

from keyguard.domain.limits import Limits
from keyguard.domain.pricing import (
    DEFAULT_OUTPUT_TOKENS,
    PriceTable,
    estimate_request,
    usage_from_response,
)
from keyguard.domain.records import VirtualKey
from keyguard.domain.redaction import needs_redaction
from keyguard.gateway.audit import RequestRecord
from keyguard.gateway.limits import GENERATING_PATHS, settle_figures
from keyguard.gateway.server import VaultAuditSink, audit_row
from keyguard.limits.ports import Limiter

log = logging.getLogger("keyguard.gateway.edge")

_UTC = timezone.utc
_decode = json.JSONDecoder().decode


class RenderedRecord(NamedTuple):
    """An audit row the edge rendered (already redacted) plus what last-use tracking needs."""

    when_iso: str
    actor: str
    subject: str
    source: str
    outcome: str
    content: bytes
    details: str
    key_id: str | None
    status: int
    #: unix microseconds (turned into a datetime only for the keys' last use, once per batch)
    time: int


_DAY_US = 86_400_000_000

EdgeAuditItem = RequestRecord | RenderedRecord


def _doc(body: str | None) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


class RecordIntake:
    """Handles the edge's records: ``intake(line)`` per stdout line."""

    def __init__(
        self,
        audit: Callable[[EdgeAuditItem], None],
        *,
        limiter: Limiter | None = None,
        prices: PriceTable | None = None,
        keys: Callable[[], Mapping[str, VirtualKey]] = dict,
        default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    ) -> None:
        self._audit = audit
        self._limiter = limiter
        self._prices = prices
        self._keys = keys
        self._default_out = default_output_tokens
        self._limits: dict[str, tuple[VirtualKey, Limits]] = {}
        #: usage to count, summed per (key, UTC day: a budget period is whole days) until
        #: :meth:`flush_charges`: [requests, tokens, nano-USD, latest unix µs]
        self._charges: dict[tuple[str, int], list[int]] = {}
        self.records = 0

    def intake_many(self, lines: Sequence[bytes]) -> None:
        """Several records (what one read of the pipe brought), then their usage counted with
        one call per key."""
        for line in lines:
            self.intake(line)
        self.flush_charges()

    def flush_charges(self) -> None:
        charges, self._charges = self._charges, {}
        limiter = self._limiter
        if limiter is None:
            return
        for (key_id, _), (n, tokens, cost, t_us) in charges.items():
            found = self._limits_of(key_id)
            if found is None:  # a key deleted since: nothing to count against
                continue
            when = datetime.fromtimestamp(t_us / 1e6, _UTC)
            try:
                limiter.record(key_id, found[1], tokens, cost, when, n)
            except Exception as exc:  # the counters' store is away: the records are audited
                log.warning("edge: could not count usage (%s)", type(exc).__name__)

    def intake(self, line: bytes) -> None:
        if line.startswith(b"R\t"):
            self._intake_rendered(line)
            return
        try:
            rec = _decode(line.decode())
            if rec.get("type") != "r":
                log.warning("edge: unexpected line of type %r", str(rec.get("type"))[:20])
                return
            when = datetime.fromtimestamp(rec["t"] / 1e6, _UTC)
            status = int(rec["status"])
            key_id = rec.get("key_id")
            item = self._rendered(rec, key_id, status, when) or self._record(
                rec, key_id, status, when
            )
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("edge: unreadable record (%s)", type(exc).__name__)
            return
        self.records += 1
        self._audit(item)
        if self._limiter is not None and key_id is not None:
            self._charge(rec, key_id, int(rec["t"]))

    def _intake_rendered(self, line: bytes) -> None:
        """A tab-separated record: audit row rendered and usage priced by the edge
        (``native/edge/src/wire/records.rs``)."""
        parts = line.decode().rstrip("\n").split("\t")
        if len(parts) != 13:
            log.warning("edge: unreadable record (%d fields)", len(parts))
            return
        _, t, key_id, status, tokens, cost, content, when_iso, details, *columns = parts
        try:
            t_us, status_code = int(t), int(status)
        except ValueError:
            log.warning("edge: unreadable record (numbers)")
            return
        actor, subject, source, outcome = columns
        self.records += 1
        if needs_redaction(content):  # defence in depth: rendered (and redacted) here instead
            when = datetime.fromtimestamp(t_us / 1e6, _UTC)
            self._audit(_from_content(content, key_id or None, when))
        else:
            self._audit(
                RenderedRecord(
                    when_iso,
                    actor,
                    subject,
                    source,
                    outcome,
                    content.encode(),
                    details,
                    key_id or None,
                    status_code,
                    t_us,
                )
            )
        if key_id and self._limiter is not None:
            self._count(key_id, int(tokens), int(cost), t_us)

    @staticmethod
    def _record(
        rec: dict[str, Any], key_id: str | None, status: int, when: datetime
    ) -> RequestRecord:
        model = rec.get("model")
        return RequestRecord(
            time=when,
            key_id=key_id,
            client_ip=str(rec["client_ip"]),
            method=str(rec["method"]),
            path=str(rec["path"])[:512],
            model=model[:200] if isinstance(model, str) and model else None,
            status=status,
            latency_ms=round(float(rec["latency_ms"]), 3),
            upstream=rec.get("upstream"),
            upstream_version=rec.get("version"),
            outcome="ok" if status < 400 else "denied" if status < 500 else "error",
        )

    @staticmethod
    def _rendered(
        rec: dict[str, Any], key_id: str | None, status: int, when: datetime
    ) -> RenderedRecord | None:
        """The row as the edge rendered and redacted it (``audit``: content, time, details,
        actor, subject, source, outcome), unless anything in it is left to redact."""
        parts = rec.get("audit")
        if not parts or len(parts) != 7:
            return None
        content, when_iso, details, actor, subject, source, outcome = parts
        if needs_redaction(content):  # defence in depth: render it here instead
            return None
        return RenderedRecord(
            when_iso,
            actor,
            subject,
            source,
            outcome,
            content.encode(),
            details,
            key_id,
            status,
            int(rec["t"]),
        )

    def _limits_of(self, key_id: str) -> tuple[VirtualKey, Limits] | None:
        key = self._keys().get(key_id)
        if key is None:
            return None
        hit = self._limits.get(key_id)
        if hit is None or hit[0] is not key:  # a new snapshot has new records
            hit = (key, Limits.of(key))
            if len(self._limits) > 100_000:
                self._limits.clear()
            self._limits[key_id] = hit
        return hit

    def _charge(self, rec: dict[str, Any], key_id: str, t_us: int) -> None:
        if self._prices is None or self._limiter is None:
            return
        tokens, cost = rec.get("tokens"), rec.get("cost_nano")
        if tokens is None or cost is None:  # no usage reported: priced here, as the core does
            tokens, cost = self._figures(rec, self._prices)
        self._count(key_id, int(tokens), int(cost), t_us)

    def _count(self, key_id: str, tokens: int, cost: int, t_us: int) -> None:
        """Add one request's usage to what :meth:`flush_charges` counts (per key and UTC day,
        so requests of one budget period are summed and a batch spanning midnight is not)."""
        slot = (key_id, t_us // _DAY_US)
        acc = self._charges.get(slot)
        if acc is None:
            self._charges[slot] = [1, tokens, cost, t_us]
        else:
            acc[0] += 1
            acc[1] += tokens
            acc[2] += cost
            if t_us > acc[3]:
                acc[3] = t_us

    def _figures(self, rec: dict[str, Any], prices: PriceTable) -> tuple[int, int]:
        usage = None
        if rec.get("usage"):
            try:
                usage = usage_from_response(json.loads(rec["usage"]))
            except (ValueError, RecursionError):
                usage = None
        model = rec.get("model") or None
        path = str(rec.get("path", ""))

        def estimate() -> Any:
            return estimate_request(
                _doc(rec.get("body")),
                model,
                prices,
                default_output_tokens=self._default_out,
                body_size=int(rec.get("body_size") or 0),
                generates=path in GENERATING_PATHS,
            )

        return settle_figures(
            prices,
            model,
            usage,
            int(rec.get("upstream_status") or 0),
            completed=bool(rec.get("completed")),
            abandoned=bool(rec.get("abandoned")),
            estimate=estimate,
        )


def _from_content(content: str, key_id: str | None, when: datetime) -> RequestRecord:
    """The request behind a rendered row (its canonical JSON), to be rendered again here."""
    doc = json.loads(content)
    det = doc["details"]
    method, _, path = str(doc["subject"]).partition(" ")
    return RequestRecord(
        time=when,
        key_id=key_id,
        client_ip=str(doc["source"]),
        method=method,
        path=path,
        model=det.get("model"),
        status=int(det["status"]),
        latency_ms=float(det["latency_ms"]),
        upstream=det.get("upstream"),
        upstream_version=det.get("upstream_version"),
        outcome=str(doc["outcome"]),
    )


class EdgeAuditSink(VaultAuditSink):
    """Writes batches of the edge's records: rendered rows as they are, the others rendered
    like the core's (:class:`~keyguard.gateway.server.VaultAuditSink`, whose last-use
    tracking it shares)."""

    def __call__(self, batch: Sequence[EdgeAuditItem]) -> None:
        rendered = [b for b in batch if type(b) is RenderedRecord]
        if rendered:
            self._append.append_rendered([r[:7] for r in rendered])  # type: ignore[misc]
        if len(rendered) != len(batch):
            self._append.append([audit_row(b) for b in batch if type(b) is RequestRecord])
        latest: dict[str, datetime | int] = {}
        for b in batch:
            if b.key_id is not None and b.status < 400:
                latest[b.key_id] = b.time
        for key_id, t in latest.items():
            when = t if isinstance(t, datetime) else datetime.fromtimestamp(t / 1e6, _UTC)
            self._last_used[key_id] = when
        self.touch_when_due()
