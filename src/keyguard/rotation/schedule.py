"""Scheduled rotation: resume what a crash interrupted, then rotate what is due.

A credential whose CURRENT or PENDING key is marked compromised is due at once: with an admin
key it is replaced (emergency revoke for CURRENT; a fresh rotation for PENDING), without one it
is reported in ``manual`` (and logged as a warning) for a human to replace.

:func:`run_due` is what ``keyguard rotate --due`` runs and what a long-running server runs
periodically (:class:`PeriodicRotation`). It holds the ``rotation:scheduler`` lease, so with
several replicas only one does the work at a time.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from keyguard.domain.records import Label, VirtualKey
from keyguard.domain.rotation import DueItem, RotationInputs, UpstreamRotation, plan_rotation
from keyguard.domain.secret import Secret
from keyguard.errors import ConcurrentUpdate, KeyguardError
from keyguard.rotation.lease import hold
from keyguard.rotation.manual import (
    EmergencyResult,
    cut_off_leaked,
    emergency_revoke,
    leaked_links,
)
from keyguard.rotation.upstream import UpstreamRotator

log = logging.getLogger("keyguard.rotation")


@dataclass
class DueResult:
    """What one scheduler pass did.

    ``manual`` holds what needs a human: upstreams due without an admin key, among them those
    whose CURRENT or PENDING version is compromised (``item.compromised`` set; see
    :attr:`compromised_manual`). ``emergency`` holds the compromised CURRENT keys replaced by
    an emergency revoke; ``aborted`` the rotations given up because their new key was marked
    compromised (a new rotation is started for each, in ``started``).
    """

    resumed: list[UpstreamRotation] = field(default_factory=list)
    started: list[UpstreamRotation] = field(default_factory=list)
    manual: list[DueItem] = field(default_factory=list)
    keys: list[tuple[VirtualKey, Secret]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    emergency: list[tuple[str, EmergencyResult]] = field(default_factory=list)
    aborted: list[UpstreamRotation] = field(default_factory=list)
    #: ``(upstream, version)``: compromised keys out of use whose service account was deleted
    cut_off: list[tuple[str, int]] = field(default_factory=list)

    @property
    def compromised_manual(self) -> list[DueItem]:
        """Compromised keys still in use that keyguard could not replace (no admin key)."""
        return [item for item in self.manual if item.compromised is not None]


def run_due(
    rotator: UpstreamRotator,
    *,
    rotate_keys: bool = True,
    key_grace: timedelta = timedelta(hours=24),
    actor: str = "system",
    source: str = "rotation",
) -> DueResult:
    """Resume every in-flight upstream rotation, then start those that are due.

    Upstreams without an admin key are only reported (``manual``). Due virtual keys get a new
    token (returned once, in ``keys``) when ``rotate_keys``; the old one keeps working for
    ``key_grace``.
    """
    vault = rotator.vault
    store = vault.store
    result = DueResult()
    with hold(
        store,
        "rotation:scheduler",
        rotator.holder,
        vault.now,
        rotator.policy.lease_ttl,
        what="the rotation scheduler",
    ):
        # a credential with a compromised key in use is handled below, not resumed blindly:
        # resuming could promote a compromised PENDING key, or keep a compromised CURRENT one
        # as the fallback
        urgent = {c.name for c in vault.list_upstreams() if c.compromised_in_use()}
        for r in rotator.in_flight():
            if r.upstream in urgent:
                continue
            try:
                done = rotator.resume(r.upstream)
                if done is not None:
                    result.resumed.append(done)
            except KeyguardError as exc:
                result.errors.append((r.upstream, str(exc)))
        _cut_off(rotator, result, actor=actor, source=source)
        inputs = RotationInputs(
            upstreams=vault.list_upstreams(),
            keys=vault.list_keys(),
            key_rotated_at=vault.key_rotated_at(),
            admin_upstreams=[a.upstream for a in store.list_admin_keys()],
            in_flight=[r.upstream for r in rotator.in_flight()],
        )
        for item in plan_rotation(inputs, vault.now()):
            try:
                if item.kind == "upstream" and item.automatic and item.compromised is not None:
                    _replace_compromised(rotator, item, result, actor=actor, source=source)
                elif item.kind == "upstream" and item.automatic:
                    result.started.append(rotator.start(item.name))
                elif item.kind == "upstream":
                    result.manual.append(item)
                elif rotate_keys:
                    result.keys.append(
                        vault.rotate_key(item.name, grace=key_grace, actor=actor, source=source)
                    )
            except KeyguardError as exc:
                result.errors.append((item.name, str(exc)))
    return result


def _cut_off(rotator: UpstreamRotator, result: DueResult, *, actor: str, source: str) -> None:
    """Delete the service accounts of compromised keys no longer in use (an emergency revoke
    whose deletion failed): a leaked key works at OpenAI until its account is deleted."""
    vault = rotator.vault
    for admin in vault.store.list_admin_keys():
        name = admin.upstream
        try:
            if not leaked_links(vault, name):
                continue
            with rotator.locked(name):
                versions = cut_off_leaked(vault, name, rotator.connect, actor=actor, source=source)
            result.cut_off += [(name, v) for v in versions]
        except KeyguardError as exc:
            result.errors.append((name, str(exc)))


def _replace_compromised(
    rotator: UpstreamRotator, item: DueItem, result: DueResult, *, actor: str, source: str
) -> None:
    """A compromised key in use, with an admin key: a compromised CURRENT gets an emergency
    revoke (fresh key promoted, the leaked one loses every label and its service account);
    a compromised PENDING one is never promoted: its rotation is aborted and a new one
    started."""
    name = item.name
    if item.compromised is Label.CURRENT:
        done = emergency_revoke(rotator.vault, name, rotator.connect, actor=actor, source=source)
        result.emergency.append((name, done))
        return
    r = rotator.vault.store.get_rotation(name)
    if r is not None and not r.state.terminal and r.new_version == item.compromised_version:
        result.aborted.append(rotator.abort(name))
    result.started.append(rotator.start(name))


class PeriodicRotation:
    """Runs :func:`run_due` (upstreams only: new virtual-key tokens need a human to hand them
    out) every ``interval`` seconds on a daemon thread, until :meth:`stop`."""

    def __init__(self, rotator: UpstreamRotator, interval: float = 300.0) -> None:
        self._rotator = rotator
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="keyguard-rotation", daemon=True)

    def start(self) -> PeriodicRotation:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                result = run_due(self._rotator, rotate_keys=False)
                for name, message in result.errors:
                    log.warning("rotation of %s failed: %s", name, message)
                for item in result.compromised_manual:  # every pass, until it is replaced
                    log.warning("upstream %s: %s", item.name, item.reason)
                for name, version in result.cut_off:
                    log.warning(
                        "upstream %s: service account of compromised version %d deleted",
                        name,
                        version,
                    )
                for name, done in result.emergency:
                    log.warning(
                        "upstream %s: compromised version %d replaced by version %d",
                        name,
                        done.revoked_version,
                        done.new_version,
                    )
            except ConcurrentUpdate:
                pass  # another replica runs the scheduler now
            except Exception as exc:
                log.warning("rotation pass failed: %s", type(exc).__name__)
            self._stop.wait(self._interval)
