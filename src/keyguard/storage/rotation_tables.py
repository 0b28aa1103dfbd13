"""Tables of rotation, written once for both SQL backends: rotation records, leases, admin
keys, service-account links.

None of these writes bumps the generation counter: no cache depends on them. The
compare-and-set of :meth:`RotationTables.save_rotation` and the lease take-over read and then
write inside one transaction, which holds the vault's write lock, so they cannot interleave
with another process doing the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from keyguard.domain.rotation import (
    AdminKeyRecord,
    Lease,
    RotationState,
    ServiceAccountLink,
    UpstreamRotation,
)
from keyguard.errors import AlreadyExists, ConcurrentUpdate, KeyNotFound
from keyguard.storage import codec as c
from keyguard.storage.sqlbase import SqlBase, decodes

_LINK_COLUMNS = "upstream, version, project_id, account_id, api_key_id, created_at, deleted_at"
_LINKS = f"SELECT {_LINK_COLUMNS} FROM service_accounts"  # noqa: S608 - constant column list


def _link(row: Sequence[object]) -> ServiceAccountLink:
    return ServiceAccountLink(
        upstream=str(row[0]),
        version=int(str(row[1])),
        project_id=str(row[2]),
        account_id=str(row[3]),
        api_key_id=None if row[4] is None else str(row[4]),
        created_at=c.dt_req(str(row[5])),
        deleted_at=c.dt(None if row[6] is None else str(row[6])),
    )


class RotationTables(SqlBase):
    """The :class:`~keyguard.storage.ports.RotationStore` part of the store."""

    def _upstream_exists(self, name: str) -> bool:
        return self._one("SELECT 1 FROM upstreams WHERE name = ?", (name,)) is not None

    # -- rotation records -----------------------------------------------------------------

    @decodes
    def get_rotation(self, upstream: str) -> UpstreamRotation | None:
        row = self._one("SELECT record FROM rotations WHERE upstream = ?", (upstream,))
        return None if row is None else UpstreamRotation.from_json(row[0])

    @decodes
    def list_rotations(self) -> list[UpstreamRotation]:
        rows = self._all("SELECT record FROM rotations ORDER BY upstream")
        return [UpstreamRotation.from_json(r[0]) for r in rows]

    def save_rotation(
        self, rotation: UpstreamRotation, expect: tuple[str, RotationState] | None
    ) -> None:
        r = rotation
        with self.transaction():
            row = self._one(
                "SELECT rotation_id, state FROM rotations WHERE upstream = ?", (r.upstream,)
            )
            if expect is None:
                if row is not None and not RotationState(row[1]).terminal:
                    raise ConcurrentUpdate(
                        f"a rotation of {r.upstream!r} is already in progress ({row[1]})"
                    )
            elif row is None or (row[0], row[1]) != (expect[0], expect[1].value):
                raise ConcurrentUpdate(f"the rotation of {r.upstream!r} was changed by another run")
            if not self._upstream_exists(r.upstream):
                raise KeyNotFound(f"no upstream credential {r.upstream!r}")
            self._run(
                "INSERT INTO rotations (upstream, rotation_id, state, updated_at, record)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (upstream) DO UPDATE SET"
                " rotation_id = excluded.rotation_id, state = excluded.state,"
                " updated_at = excluded.updated_at, record = excluded.record",
                (r.upstream, r.rotation_id, r.state.value, c.iso(r.updated_at), r.to_json()),
            )

    # -- leases ---------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, now: datetime, expires_at: datetime) -> bool:
        with self.transaction():
            found = self._one("SELECT holder, expires_at FROM leases WHERE name = ?", (name,))
            if found is not None and found[0] != holder and c.dt_req(found[1]) > now:
                return False
            self._run(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                " expires_at = excluded.expires_at",
                (name, holder, c.iso(expires_at)),
            )
        return True

    @decodes
    def get_lease(self, name: str) -> Lease | None:
        row = self._one("SELECT name, holder, expires_at FROM leases WHERE name = ?", (name,))
        return None if row is None else Lease(row[0], row[1], c.dt_req(row[2]))

    def release_lease(self, name: str, holder: str) -> bool:
        sql = "DELETE FROM leases WHERE name = ? AND holder = ?"
        return self._write(sql, (name, holder), bump=False) > 0

    # -- admin keys -----------------------------------------------------------------------

    def put_admin_key(self, record: AdminKeyRecord, sealed: bytes) -> None:
        a = record
        with self.transaction():
            if not self._upstream_exists(a.upstream):
                raise KeyNotFound(f"no upstream credential {a.upstream!r}")
            self._run(
                "INSERT INTO admin_keys (upstream, project_id, fingerprint, sealed, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (upstream) DO UPDATE SET"
                " project_id = excluded.project_id, fingerprint = excluded.fingerprint,"
                " sealed = excluded.sealed, created_at = excluded.created_at",
                (a.upstream, a.project_id, a.fingerprint, sealed, c.iso(a.created_at)),
            )

    @decodes
    def get_admin_key(self, upstream: str) -> tuple[AdminKeyRecord, bytes] | None:
        row = self._one(
            "SELECT upstream, project_id, fingerprint, created_at, sealed FROM admin_keys"
            " WHERE upstream = ?",
            (upstream,),
        )
        if row is None:
            return None
        return AdminKeyRecord(row[0], row[1], row[2], c.dt_req(row[3])), c.blob(row[4])

    @decodes
    def list_admin_keys(self) -> list[AdminKeyRecord]:
        rows = self._all(
            "SELECT upstream, project_id, fingerprint, created_at FROM admin_keys ORDER BY upstream"
        )
        return [AdminKeyRecord(r[0], r[1], r[2], c.dt_req(r[3])) for r in rows]

    def delete_admin_key(self, upstream: str) -> bool:
        sql = "DELETE FROM admin_keys WHERE upstream = ?"
        return self._write(sql, (upstream,), bump=False) > 0

    # -- service-account links ------------------------------------------------------------

    def add_service_account(self, link: ServiceAccountLink) -> None:
        s = link
        inserted = self._write(
            f"INSERT INTO service_accounts ({_LINK_COLUMNS})"  # noqa: S608 - constant column list
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (upstream, version) DO NOTHING",
            (
                s.upstream,
                s.version,
                s.project_id,
                s.account_id,
                s.api_key_id,
                c.iso(s.created_at),
                c.iso(s.deleted_at),
            ),
            bump=False,
        )
        if not inserted:
            raise AlreadyExists(f"version {s.version} of {s.upstream!r} is already linked")

    @decodes
    def list_service_accounts(self, upstream: str | None = None) -> list[ServiceAccountLink]:
        rows = (
            self._all(_LINKS + " WHERE upstream = ? ORDER BY version", (upstream,))
            if upstream is not None
            else self._all(_LINKS + " ORDER BY upstream, version")
        )
        return [_link(r) for r in rows]

    def mark_service_account_deleted(self, upstream: str, account_id: str, at: datetime) -> None:
        changed = self._write(
            "UPDATE service_accounts SET deleted_at = COALESCE(deleted_at, ?)"
            " WHERE upstream = ? AND account_id = ?",
            (c.iso(at), upstream, account_id),
            bump=False,
        )
        if not changed:
            raise KeyNotFound(f"no service account {account_id} linked to {upstream!r}")
