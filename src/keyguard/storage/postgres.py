"""PostgreSQL backend: the store of multi-replica deployments (psycopg 3, sync API).

``PostgresStore("postgresql://user@host:5432/db?schema=keyguard")`` connects, migrates the schema
(under an advisory lock) and serves the :class:`~keyguard.storage.ports.VaultStore` protocol;
:mod:`keyguard.storage.postgres_base` says how it connects and serialises writes. This module
holds metadata, KEKs, upstream credentials and virtual keys. Multi-statement reads are single
joined queries, so each sees one snapshot, as SQLite's read transactions do.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from keyguard.domain.records import (
    KeySecretHash,
    Label,
    UpstreamCredential,
    UpstreamVersion,
    VirtualKey,
)
from keyguard.errors import AlreadyExists, ConcurrentUpdate, KeyNotFound
from keyguard.storage import codec as c
from keyguard.storage.ports import KekRecord, SealedUpstream
from keyguard.storage.postgres_admin_tokens import PgAdminTokenTables
from keyguard.storage.postgres_audit import PgAuditTables
from keyguard.storage.postgres_conn import parse_target
from keyguard.storage.postgres_rotation import PgRotationTables
from keyguard.storage.sqlite_base import decodes

__all__ = ["PostgresStore"]


def _prefixed(columns: str, alias: str) -> str:
    return ", ".join(f"{alias}.{col.strip()}" for col in columns.split(","))


def _marks(n: int) -> str:
    return ", ".join(["%s"] * n)


# one row per version (or one with NULL version columns): a credential and its versions at once
_UPSTREAMS_JOINED = (
    f"SELECT {_prefixed(c.UPSTREAM_COLUMNS, 'u')}, {_prefixed(c.VERSION_COLUMNS, 'v')}"  # noqa: S608 - constant column lists
    " FROM upstreams u LEFT JOIN upstream_versions v ON v.upstream = u.name"
)
_N_UPSTREAM = len(c.UPSTREAM_COLUMNS.split(","))


def _group_upstreams(rows: Sequence[tuple[Any, ...]]) -> list[UpstreamCredential]:
    heads: dict[str, tuple[Any, ...]] = {}
    versions: dict[str, list[UpstreamVersion]] = {}
    for row in rows:
        head, version = row[:_N_UPSTREAM], row[_N_UPSTREAM:]
        heads.setdefault(head[0], head)
        found = versions.setdefault(head[0], [])
        if version[0] is not None:
            found.append(c.version_from_row(version))
    return [c.upstream_from_row(head, versions[name]) for name, head in heads.items()]


class PostgresStore(PgAuditTables, PgRotationTables, PgAdminTokenTables):
    """A :class:`~keyguard.storage.ports.VaultStore` in one PostgreSQL schema.

    ``url``: ``postgresql://`` or ``postgres://`` (libpq syntax, ``options=-csearch_path=...``
    honoured) with an optional ``?schema=NAME``; ``schema=`` overrides it. ``pool_size`` bounds
    the connections of this object; ``lock_timeout_ms`` how long a writer waits for the write
    lock (or a migration) before :class:`~keyguard.errors.StorageUnavailable`.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
        lock_timeout_ms: int = 5000,
    ) -> None:
        target = parse_target(
            url, schema=schema, connect_timeout=connect_timeout, lock_timeout_ms=lock_timeout_ms
        )
        super().__init__(target, pool_size=pool_size, pool_timeout=connect_timeout)

    @property
    def url(self) -> str:
        """Where this store lives, without credentials (safe to print)."""
        return self._target.display

    # -- metadata and KEKs ----------------------------------------------------------------

    def get_meta(self, name: str) -> bytes | None:
        row = self._one("SELECT value FROM meta WHERE name = %s", (name,))
        return None if row is None else c.blob(row[0])

    def set_meta(self, name: str, value: bytes) -> None:
        self._write(
            "INSERT INTO meta (name, value) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    @decodes
    def list_keks(self) -> list[KekRecord]:
        rows = self._all("SELECT kek_id, wrapped, created_at FROM keks ORDER BY kek_id")
        return [KekRecord(int(r[0]), c.blob(r[1]), c.dt_req(r[2])) for r in rows]

    def add_kek(self, kek: KekRecord) -> None:
        with self.transaction():
            if not self._run(
                "INSERT INTO keks (kek_id, wrapped, created_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (kek_id) DO NOTHING",
                (kek.kek_id, kek.wrapped, c.iso(kek.created_at)),
            ):
                raise AlreadyExists(f"KEK {kek.kek_id} already exists")
            self._bump()

    def replace_kek(self, kek_id: int, wrapped: bytes) -> None:
        if not self._write("UPDATE keks SET wrapped = %s WHERE kek_id = %s", (wrapped, kek_id)):
            raise KeyNotFound(f"no KEK {kek_id}")

    # -- upstream credentials -------------------------------------------------------------

    def add_upstream(self, cred: UpstreamCredential) -> None:
        with self.transaction():
            if not self._run(
                f"INSERT INTO upstreams ({c.UPSTREAM_COLUMNS}) VALUES ({_marks(_N_UPSTREAM)})"  # noqa: S608 - constant column lists
                " ON CONFLICT (name) DO NOTHING",
                c.upstream_params(cred),
            ):
                raise AlreadyExists(f"upstream credential {cred.name!r} already exists")
            self._bump()

    @decodes
    def get_upstream(self, name: str) -> UpstreamCredential | None:
        rows = self._all(_UPSTREAMS_JOINED + " WHERE u.name = %s ORDER BY v.version", (name,))
        found = _group_upstreams(rows)
        return found[0] if found else None

    @decodes
    def list_upstreams(self) -> list[UpstreamCredential]:
        return _group_upstreams(self._all(_UPSTREAMS_JOINED + " ORDER BY u.name, v.version"))

    def delete_upstream(self, name: str) -> bool:
        with self.transaction():
            self._run("DELETE FROM upstream_versions WHERE upstream = %s", (name,))
            return bool(self._write("DELETE FROM upstreams WHERE name = %s", (name,)))

    def add_upstream_version(self, version: UpstreamVersion, sealed: bytes) -> None:
        v = version
        label = v.label.value if v.label else None
        with self.transaction():
            if not self._one("SELECT 1 FROM upstreams WHERE name = %s", (v.upstream,)):
                raise KeyNotFound(f"no upstream credential {v.upstream!r}")
            taken = self._one(
                "SELECT version, label FROM upstream_versions WHERE upstream = %s"
                " AND (version = %s OR label = %s)",
                (v.upstream, v.version, label),
            )
            if taken is not None:
                what = f"version {v.version}" if taken[0] == v.version else f"label {taken[1]}"
                raise ConcurrentUpdate(f"{what} of {v.upstream!r} is already taken")
            self._run(
                "INSERT INTO upstream_versions (upstream, version, label, fingerprint, sealed,"
                " created_at, compromised_at, compromised_reason, compromised_source)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    v.upstream,
                    v.version,
                    label,
                    v.fingerprint,
                    sealed,
                    c.iso(v.created_at),
                    c.iso(v.compromised_at),
                    v.compromised_reason,
                    v.compromised_source,
                ),
            )
            self._write(
                "UPDATE upstreams SET last_rotated_at = %s WHERE name = %s",
                (c.iso(v.created_at), v.upstream),
            )

    def set_upstream_labels(self, name: str, labels: Mapping[int, Label | None]) -> None:
        given = [lb.value for lb in labels.values() if lb is not None]
        if len(given) != len(set(given)):
            raise ValueError("a label can be given to only one version")
        with self.transaction():
            rows = self._all("SELECT version FROM upstream_versions WHERE upstream = %s", (name,))
            known = {int(r[0]) for r in rows}
            for version in labels:
                if version not in known:
                    raise KeyNotFound(f"upstream credential {name!r} has no version {version}")
            # free every label involved first: the unique constraint checks each row at once
            self._run(
                "UPDATE upstream_versions SET label = NULL WHERE upstream = %s"
                " AND (version = ANY(%s) OR label = ANY(%s))",
                (name, list(labels), given),
            )
            for version, new_label in labels.items():
                if new_label is not None:
                    self._run(
                        "UPDATE upstream_versions SET label = %s"
                        " WHERE upstream = %s AND version = %s",
                        (new_label.value, name, version),
                    )
            self._bump()

    def get_sealed_upstream(self, name: str, version: int) -> bytes:
        row = self._one(
            "SELECT sealed FROM upstream_versions WHERE upstream = %s AND version = %s",
            (name, version),
        )
        if row is None:
            raise KeyNotFound(f"upstream credential {name!r} has no version {version}")
        return c.blob(row[0])

    @decodes
    def iter_sealed_upstreams(self) -> Iterator[SealedUpstream]:
        rows = self._all(
            "SELECT upstream, version, sealed FROM upstream_versions ORDER BY upstream, version"
        )
        return iter([SealedUpstream(r[0], int(r[1]), c.blob(r[2])) for r in rows])

    def replace_sealed_upstream(self, name: str, version: int, sealed: bytes) -> None:
        if not self._write(
            "UPDATE upstream_versions SET sealed = %s WHERE upstream = %s AND version = %s",
            (sealed, name, version),
        ):
            raise KeyNotFound(f"upstream credential {name!r} has no version {version}")

    @decodes
    def find_upstream_versions(self, fingerprint: str) -> list[UpstreamVersion]:
        rows = self._all(
            f"SELECT {c.VERSION_COLUMNS} FROM upstream_versions WHERE fingerprint = %s"  # noqa: S608 - constant column lists
            " ORDER BY upstream, version",
            (fingerprint,),
        )
        return [c.version_from_row(r) for r in rows]

    @decodes
    def mark_upstream_compromised(
        self, name: str, version: int, at: datetime, reason: str, source: str
    ) -> UpstreamVersion:
        with self.transaction():
            changed = self._run(
                "UPDATE upstream_versions SET compromised_at = %s, compromised_reason = %s,"
                " compromised_source = %s WHERE upstream = %s AND version = %s"
                " AND compromised_at IS NULL",
                (c.iso(at), reason, source, name, version),
            )
            row = self._one(
                f"SELECT {c.VERSION_COLUMNS} FROM upstream_versions"  # noqa: S608 - constant column lists
                " WHERE upstream = %s AND version = %s",
                (name, version),
            )
            if row is None:
                raise KeyNotFound(f"upstream credential {name!r} has no version {version}")
            if changed:
                self._bump()
            return c.version_from_row(row)

    # -- virtual keys ---------------------------------------------------------------------

    def add_virtual_key(self, key: VirtualKey, secret: KeySecretHash) -> None:
        with self.transaction():
            params = c.key_params(key)
            if not self._run(
                f"INSERT INTO virtual_keys ({c.KEY_COLUMNS}) VALUES ({_marks(len(params))})"  # noqa: S608 - constant column lists
                " ON CONFLICT (key_id) DO NOTHING",
                params,
            ):
                raise AlreadyExists(f"virtual key {key.key_id} already exists")
            self.add_key_secret(secret)

    @decodes
    def get_virtual_key(self, key_id: str) -> VirtualKey | None:
        row = self._one(
            f"SELECT {c.KEY_COLUMNS} FROM virtual_keys WHERE key_id = %s",  # noqa: S608 - constant column lists
            (key_id,),
        )
        return None if row is None else c.key_from_row(row)

    @decodes
    def list_virtual_keys(self) -> list[VirtualKey]:
        rows = self._all(
            f"SELECT {c.KEY_COLUMNS} FROM virtual_keys ORDER BY created_at, key_id"  # noqa: S608 - constant column lists
        )
        return [c.key_from_row(r) for r in rows]

    def revoke_virtual_key(self, key_id: str, at: datetime) -> VirtualKey:
        with self.transaction():
            self._write(
                "UPDATE virtual_keys SET revoked_at = %s WHERE key_id = %s AND revoked_at IS NULL",
                (c.iso(at), key_id),
            )
            key = self.get_virtual_key(key_id)
        if key is None:
            raise KeyNotFound(f"no virtual key {key_id}")
        return key

    def touch_virtual_keys(self, last_used: Mapping[str, datetime]) -> None:
        rows = [(c.iso(at), key_id, c.iso(at)) for key_id, at in last_used.items()]
        with self.transaction():
            self._run_many(
                "UPDATE virtual_keys SET last_used_at = %s WHERE key_id = %s"
                " AND (last_used_at IS NULL OR last_used_at < %s)",
                rows,
            )

    def add_key_secret(self, secret: KeySecretHash) -> None:
        s = secret
        with self.transaction():
            if not self._one("SELECT 1 FROM virtual_keys WHERE key_id = %s", (s.key_id,)):
                raise KeyNotFound(f"no virtual key {s.key_id}")
            self._write(
                "INSERT INTO key_secrets (key_id, digest, created_at, valid_until)"
                " VALUES (%s, %s, %s, %s)",
                (s.key_id, s.digest, c.iso(s.created_at), c.iso(s.valid_until)),
            )

    def set_key_secret_valid_until(self, key_id: str, digest: bytes, at: datetime) -> None:
        if not self._write(
            "UPDATE key_secrets SET valid_until = %s WHERE key_id = %s AND digest = %s",
            (c.iso(at), key_id, digest),
        ):
            raise KeyNotFound(f"no such secret for virtual key {key_id}")

    @decodes
    def list_key_secrets(self, key_id: str | None = None) -> list[KeySecretHash]:
        sql = "SELECT key_id, digest, created_at, valid_until FROM key_secrets"
        rows = (
            self._all(sql + " WHERE key_id = %s ORDER BY created_at", (key_id,))
            if key_id is not None
            else self._all(sql + " ORDER BY key_id, created_at")
        )
        return [KeySecretHash(r[0], c.blob(r[1]), c.dt_req(r[2]), c.dt(r[3])) for r in rows]
