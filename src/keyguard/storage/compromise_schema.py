"""Schema step 6: an upstream key version can be marked compromised.

``compromised_at`` (ISO 8601 UTC text, NULL: not known to have leaked), a short
``compromised_reason`` and the ``compromised_source`` that reported it (``scan``, ``cli``, ...),
on ``upstream_versions``. Versions stored before this step read back as not compromised. Never
key material: the reason is cleaned by :func:`keyguard.domain.records.compromise_reason`.
Never edit a released step: add a new one (and its PostgreSQL twin).
"""

from __future__ import annotations

COMPROMISE_V6 = [
    "ALTER TABLE upstream_versions ADD COLUMN compromised_at TEXT",
    "ALTER TABLE upstream_versions ADD COLUMN compromised_reason TEXT",
    "ALTER TABLE upstream_versions ADD COLUMN compromised_source TEXT",
]

#: the PostgreSQL twin (for keyguard.storage.postgres_schema)
COMPROMISE_V6_POSTGRES = [
    'ALTER TABLE upstream_versions ADD COLUMN compromised_at TEXT COLLATE "C"',
    "ALTER TABLE upstream_versions ADD COLUMN compromised_reason TEXT",
    "ALTER TABLE upstream_versions ADD COLUMN compromised_source TEXT",
]
