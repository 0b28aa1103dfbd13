"""Rotation planning and the upstream rotation state machine, as pure data and decisions.

An automatic upstream rotation (through the OpenAI Admin API) moves through these states, and
its record is saved after every step, so a crashed rotation resumes where it stopped::

    creating  -> created  -> tested  -> finished  -> retired
    (intent)     (new key     (cheap     (PENDING is    (old service account
                  PENDING)     call ok)   CURRENT, old    deleted, PREVIOUS
                                          PREVIOUS)       label dropped)

``creating`` is saved *before* the service account is created, under a name derived from the
rotation id; a crash between the API call and the save is healed on resume by deleting the
account of that name (its key was shown once and is lost) and creating a new one.

Nothing here does I/O; time is always passed in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from keyguard.domain.records import Label, UpstreamCredential, VirtualKey

ROTATION_FORMAT = 1
#: ``last_used_at`` is coarse (whole seconds or worse, updated lazily): a use this close to the
#: switch may have happened after it, so it counts as "still in use"
LAST_USED_SLACK = timedelta(seconds=60)


class RotationState(str, Enum):
    """Where an upstream rotation stands; ``retired`` and ``aborted`` are terminal."""

    CREATING = "creating"
    CREATED = "created"
    TESTED = "tested"
    FINISHED = "finished"
    RETIRED = "retired"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        return self in (RotationState.RETIRED, RotationState.ABORTED)


@dataclass(frozen=True)
class UpstreamRotation:
    """The persisted record of one upstream rotation (ids and times, never key material)."""

    upstream: str
    rotation_id: str
    state: RotationState
    project_id: str
    account_name: str
    started_at: datetime
    updated_at: datetime
    grace: timedelta
    max_grace: timedelta
    old_version: int | None = None
    new_version: int | None = None
    new_account_id: str | None = None
    finished_at: datetime | None = None
    old_last_used: datetime | None = None
    old_observed: bool = False
    detail: str = ""

    def advance(self, state: RotationState, now: datetime, **changes: Any) -> UpstreamRotation:
        """The record after moving to ``state`` at ``now``."""
        return replace(self, state=state, updated_at=now, **changes)

    def to_json(self) -> str:
        doc = asdict(self)
        doc["state"] = self.state.value
        doc["grace"] = self.grace.total_seconds()
        doc["max_grace"] = self.max_grace.total_seconds()
        for name in ("started_at", "updated_at", "finished_at", "old_last_used"):
            value = getattr(self, name)
            doc[name] = value.isoformat() if value is not None else None
        doc["format"] = ROTATION_FORMAT
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> UpstreamRotation:
        doc = json.loads(raw)
        doc.pop("format", None)
        doc["state"] = RotationState(doc["state"])
        doc["grace"] = timedelta(seconds=doc["grace"])
        doc["max_grace"] = timedelta(seconds=doc["max_grace"])
        for name in ("started_at", "updated_at", "finished_at", "old_last_used"):
            if doc.get(name) is not None:
                doc[name] = datetime.fromisoformat(doc[name])
        return cls(**doc)


@dataclass(frozen=True)
class ServiceAccountLink:
    """Which OpenAI service account (and API key id) holds one upstream key version."""

    upstream: str
    version: int
    project_id: str
    account_id: str
    api_key_id: str | None
    created_at: datetime
    deleted_at: datetime | None = None


@dataclass(frozen=True)
class AdminKeyRecord:
    """The admin key of one upstream credential: where it acts, never its value."""

    upstream: str
    project_id: str
    fingerprint: str
    created_at: datetime


@dataclass(frozen=True)
class Lease:
    """A named lock with an expiry: one holder at a time, taken over once it has expired."""

    name: str
    holder: str
    expires_at: datetime


@dataclass(frozen=True)
class RetireCheck:
    """Outcome of :func:`retire_decision`."""

    retire: bool
    reason: str
    observed_last_used: datetime | None = None


def retire_decision(
    rotation: UpstreamRotation,
    last_used: datetime | None,
    now: datetime,
    *,
    old_compromised: bool = False,
) -> RetireCheck:
    """May the old key be retired now?

    Never before the grace window has passed since the switch — unless the old key is marked
    compromised: a leaked key still works at OpenAI until it is deleted, so it goes at once.
    After the window: retire when the old key has not been used since the switch (allowing
    :data:`LAST_USED_SLACK`), when its ``last_used_at`` did not move since the previous check,
    or when the hard window (``max_grace``) has expired.
    """
    finished = rotation.finished_at
    if finished is None:
        return RetireCheck(False, "the rotation has not switched yet")
    if old_compromised:
        return RetireCheck(True, "the old key is marked compromised: retired at once", last_used)
    if now < finished + rotation.grace:
        left = finished + rotation.grace - now
        return RetireCheck(False, f"grace window: {int(left.total_seconds())}s left", last_used)
    if now >= finished + rotation.max_grace:
        return RetireCheck(True, "the maximum grace window expired", last_used)
    if last_used is None or last_used < finished - LAST_USED_SLACK:
        return RetireCheck(True, "the old key was not used since the switch", last_used)
    if rotation.old_observed and last_used == rotation.old_last_used:
        return RetireCheck(True, "the old key's last use stopped advancing", last_used)
    return RetireCheck(False, "the old key is still in use", last_used)


@dataclass(frozen=True)
class DueItem:
    """Something :func:`plan_rotation` found due (or overdue) for rotation."""

    kind: str  # "upstream" | "virtual_key"
    name: str  # upstream name or key id
    due_at: datetime
    automatic: bool  # an upstream with an admin key, or any virtual key
    reason: str = ""
    #: the label of the compromised version that makes an upstream due at once (CURRENT
    #: before PENDING), ``None`` when it is due by age only
    compromised: Label | None = None
    compromised_version: int | None = None


@dataclass(frozen=True)
class RotationInputs:
    """What :func:`plan_rotation` looks at."""

    upstreams: Sequence[UpstreamCredential] = ()
    keys: Sequence[VirtualKey] = ()
    key_rotated_at: Mapping[str, datetime] = field(default_factory=dict)
    admin_upstreams: Iterable[str] = ()
    in_flight: Iterable[str] = ()


def plan_rotation(inputs: RotationInputs, now: datetime) -> list[DueItem]:
    """Every upstream credential and active virtual key whose ``max_age`` has run out, and
    every upstream whose CURRENT or PENDING version is marked compromised.

    An upstream's age counts from its last rotation (or creation); a virtual key's from its
    newest secret. Upstreams with a rotation already in flight are left to ``--resume``, unless
    a version in use is compromised (:func:`compromised_due`): that is due at once, whatever
    the age, the ``max_age`` or a rotation in flight.
    """
    admin = set(inputs.admin_upstreams)
    busy = set(inputs.in_flight)
    due: list[DueItem] = []
    for cred in inputs.upstreams:
        leaked = compromised_due(cred, cred.name in admin)
        if leaked is not None:
            due.append(leaked)
            continue
        since = cred.last_rotated_at or cred.created_at
        if cred.max_age is None or since is None or cred.name in busy:
            continue
        at = since + cred.max_age
        if at <= now:
            auto = cred.name in admin
            why = "admin key configured" if auto else "no admin key: rotate it by hand"
            due.append(DueItem("upstream", cred.name, at, auto, why))
    for key in inputs.keys:
        if key.max_age is None or key.revoked or key.expired(now):
            continue
        at = inputs.key_rotated_at.get(key.key_id, key.created_at) + key.max_age
        if at <= now:
            due.append(DueItem("virtual_key", key.key_id, at, True, key.name))
    return sorted(due, key=lambda d: (d.due_at, d.kind, d.name))


def compromised_due(cred: UpstreamCredential, automatic: bool) -> DueItem | None:
    """The due item of ``cred`` when a CURRENT or PENDING version is marked compromised (due
    since it was marked), else ``None``. ``automatic``: an admin key is configured."""
    leaked = cred.compromised_in_use()
    if not leaked:
        return None
    first = leaked[0]
    assert first.label is not None and first.compromised_at is not None
    label = first.label.value
    if automatic:
        how = "emergency rotation" if first.label is Label.CURRENT else "new rotation"
        why = f"version {first.version} ({label}) is compromised: {how}"
    elif first.label is Label.CURRENT:
        why = (
            f"version {first.version} (CURRENT) is compromised and there is no admin key:"
            f" replace it now with 'keyguard upstream revoke {cred.name} --now --from-env VAR'"
        )
    else:
        why = (
            f"version {first.version} (PENDING) is compromised and there is no admin key:"
            f" never promote it; abort its rotation ('keyguard rotate {cred.name} --abort')"
        )
    return DueItem(
        "upstream",
        cred.name,
        min(v.compromised_at for v in leaked if v.compromised_at is not None),
        automatic,
        why,
        compromised=first.label,
        compromised_version=first.version,
    )


def next_due(max_age: timedelta | None, since: datetime | None) -> datetime | None:
    """When something rotated at ``since`` with ``max_age`` is due (``None``: never)."""
    if max_age is None or since is None:
        return None
    return since + max_age
