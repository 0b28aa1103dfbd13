"""Leases: named locks with an expiry in the store, so one rotation per credential is in flight
(and one scheduler per cluster), across processes and, on PostgreSQL, across replicas.

A holder is ``host:pid:nonce``. A lease whose holder is a process on this host that no longer
exists (killed mid-rotation) is broken at once instead of waiting for it to expire; a lease held
on another host is honoured until it expires.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from keyguard.errors import ConcurrentUpdate
from keyguard.storage.ports import VaultStore


def new_holder() -> str:
    """A holder id for this process: ``host:pid:nonce``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead_here(holder: str) -> bool:
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@contextlib.contextmanager
def hold(
    store: VaultStore,
    name: str,
    holder: str,
    clock: Callable[[], datetime],
    ttl: timedelta,
    *,
    what: str,
) -> Iterator[Callable[[], None]]:
    """Hold lease ``name`` for the block; yields ``renew()``. :class:`ConcurrentUpdate` when
    another live holder has it."""
    now = clock()
    if not store.acquire_lease(name, holder, now, now + ttl):
        lease = store.get_lease(name)
        if lease is not None and _dead_here(lease.holder):
            store.release_lease(name, lease.holder)
        if not store.acquire_lease(name, holder, now, now + ttl):
            lease = store.get_lease(name)
            until = lease.expires_at.isoformat(timespec="seconds") if lease else "?"
            who = lease.holder if lease else "?"
            raise ConcurrentUpdate(f"{what} is already running ({who}, lease until {until})")

    def renew() -> None:
        at = clock()
        if not store.acquire_lease(name, holder, at, at + ttl):
            raise ConcurrentUpdate(f"{what}: the lease was taken over by another process")

    try:
        yield renew
    finally:
        with contextlib.suppress(Exception):
            store.release_lease(name, holder)
