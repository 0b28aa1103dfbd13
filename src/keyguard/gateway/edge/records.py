"""The edge's per-request records: into the audit log, and into the usage/spend counters.

The edge writes one JSON line per request it answered itself (``Record`` in
``native/edge/src/protocol.rs``). :class:`RecordIntake` turns each into the core's
:class:`~keyguard.gateway.audit.RequestRecord` for the audit batcher, and charges the key's
usage exactly as the core's admission does (:func:`~keyguard.gateway.limits.settle_figures`):
the reported ``usage`` priced per model, else the request's estimate.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from keyguard.domain.limits import Limits
from keyguard.domain.pricing import (
    DEFAULT_OUTPUT_TOKENS,
    PriceTable,
    estimate_request,
    usage_from_response,
)
from keyguard.domain.records import VirtualKey
from keyguard.gateway.audit import RequestRecord
from keyguard.gateway.limits import GENERATING_PATHS, settle_figures
from keyguard.limits.ports import Limiter

log = logging.getLogger("keyguard.gateway.edge")

_UTC = timezone.utc


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
        audit: Callable[[RequestRecord], None],
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
        self.records = 0

    def intake(self, line: bytes) -> None:
        try:
            rec = json.loads(line)
            if rec.get("type") != "r":
                log.warning("edge: unexpected line of type %r", str(rec.get("type"))[:20])
                return
            when = datetime.fromtimestamp(rec["t"] / 1e6, _UTC)
            status = int(rec["status"])
            model = rec.get("model")
            record = RequestRecord(
                time=when,
                key_id=rec.get("key_id"),
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
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("edge: unreadable record (%s)", type(exc).__name__)
            return
        self.records += 1
        self._audit(record)
        if self._limiter is not None and record.key_id is not None:
            self._charge(rec, record, when)

    def _charge(self, rec: dict[str, Any], record: RequestRecord, when: datetime) -> None:
        key = self._keys().get(record.key_id or "")
        if key is None or self._prices is None or self._limiter is None:
            return
        prices = self._prices
        usage = None
        if rec.get("usage"):
            try:
                usage = usage_from_response(json.loads(rec["usage"]))
            except (ValueError, RecursionError):
                usage = None

        def estimate() -> Any:
            return estimate_request(
                _doc(rec.get("body")),
                record.model,
                prices,
                default_output_tokens=self._default_out,
                body_size=int(rec.get("body_size") or 0),
                generates=record.path in GENERATING_PATHS,
            )

        tokens, cost = settle_figures(
            prices,
            record.model,
            usage,
            int(rec.get("upstream_status") or 0),
            completed=bool(rec.get("completed")),
            abandoned=bool(rec.get("abandoned")),
            estimate=estimate,
        )
        try:
            self._limiter.record(key.key_id, Limits.of(key), tokens, cost, when)
        except Exception as exc:  # the counters' store is away: the record is still audited
            log.warning("edge: could not count usage (%s)", type(exc).__name__)
