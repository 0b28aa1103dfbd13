"""SQLite backend: the embedded default store (see :mod:`keyguard.storage.sqlite_base` for how
it uses SQLite). This module holds metadata, KEKs, upstream credentials and virtual keys."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

from keyguard.domain.records import (
    KeySecretHash,
    Label,
    UpstreamCredential,
    UpstreamVersion,
    VirtualKey,
)
from keyguard.errors import (
    AlreadyExists,
    ConcurrentUpdate,
    KeyguardError,
    KeyNotFound,
    StorageUnavailable,
)
from keyguard.storage import codec as c
from keyguard.storage.ports import KekRecord, SealedUpstream
from keyguard.storage.sqlite_admin_tokens import SqliteAdminTokenTables
from keyguard.storage.sqlite_audit import SqliteAuditTables
from keyguard.storage.sqlite_base import MEMORY, decodes
from keyguard.storage.sqlite_rotation import SqliteRotationTables

__all__ = ["MEMORY", "SqliteStore", "open_sqlite"]


class SqliteStore(SqliteAuditTables, SqliteRotationTables, SqliteAdminTokenTables):
    """A :class:`~keyguard.storage.ports.VaultStore` over one SQLite file (or ``:memory:``)."""

    # -- metadata and KEKs ----------------------------------------------------------------

    def get_meta(self, name: str) -> bytes | None:
        with self._lock:
            row = self._run("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else c.blob(row[0])

    def set_meta(self, name: str, value: bytes) -> None:
        self._write(
            "INSERT INTO meta (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    @decodes
    def list_keks(self) -> list[KekRecord]:
        with self._lock:
            rows = self._run("SELECT kek_id, wrapped, created_at FROM keks ORDER BY kek_id")
            return [KekRecord(int(r[0]), c.blob(r[1]), c.dt_req(r[2])) for r in rows.fetchall()]

    def add_kek(self, kek: KekRecord) -> None:
        with self.transaction():
            if self._run("SELECT 1 FROM keks WHERE kek_id = ?", (kek.kek_id,)).fetchone():
                raise AlreadyExists(f"KEK {kek.kek_id} already exists")
            self._write(
                "INSERT INTO keks (kek_id, wrapped, created_at) VALUES (?, ?, ?)",
                (kek.kek_id, kek.wrapped, c.iso(kek.created_at)),
            )

    def replace_kek(self, kek_id: int, wrapped: bytes) -> None:
        if not self._write("UPDATE keks SET wrapped = ? WHERE kek_id = ?", (wrapped, kek_id)):
            raise KeyNotFound(f"no KEK {kek_id}")

    # -- upstream credentials -------------------------------------------------------------

    def add_upstream(self, cred: UpstreamCredential) -> None:
        with self.transaction():
            if self._run("SELECT 1 FROM upstreams WHERE name = ?", (cred.name,)).fetchone():
                raise AlreadyExists(f"upstream credential {cred.name!r} already exists")
            self._write(
                f"INSERT INTO upstreams ({c.UPSTREAM_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",  # noqa: S608 - constant column lists
                c.upstream_params(cred),
            )

    def _versions(self, name: str | None) -> dict[str, list[UpstreamVersion]]:
        sql = f"SELECT {c.VERSION_COLUMNS} FROM upstream_versions"  # noqa: S608 - constant column lists
        rows = (
            self._run(sql + " WHERE upstream = ? ORDER BY version", (name,))
            if name is not None
            else self._run(sql + " ORDER BY upstream, version")
        )
        out: dict[str, list[UpstreamVersion]] = {}
        for row in rows.fetchall():
            out.setdefault(row[0], []).append(c.version_from_row(row))
        return out

    @decodes
    def get_upstream(self, name: str) -> UpstreamCredential | None:
        with self._read():
            row = self._run(
                f"SELECT {c.UPSTREAM_COLUMNS} FROM upstreams WHERE name = ?",  # noqa: S608 - constant column lists
                (name,),
            ).fetchone()
            if row is None:
                return None
            return c.upstream_from_row(row, self._versions(name).get(name, []))

    @decodes
    def list_upstreams(self) -> list[UpstreamCredential]:
        with self._read():
            rows = self._run(f"SELECT {c.UPSTREAM_COLUMNS} FROM upstreams ORDER BY name")  # noqa: S608 - constant column lists
            rows_list = rows.fetchall()
            versions = self._versions(None)
        return [c.upstream_from_row(r, versions.get(r[0], [])) for r in rows_list]

    def delete_upstream(self, name: str) -> bool:
        with self.transaction():
            self._run("DELETE FROM upstream_versions WHERE upstream = ?", (name,))
            return bool(self._write("DELETE FROM upstreams WHERE name = ?", (name,)))

    def add_upstream_version(self, version: UpstreamVersion, sealed: bytes) -> None:
        v = version
        with self.transaction():
            if not self._run("SELECT 1 FROM upstreams WHERE name = ?", (v.upstream,)).fetchone():
                raise KeyNotFound(f"no upstream credential {v.upstream!r}")
            taken = self._run(
                "SELECT version, label FROM upstream_versions WHERE upstream = ?"
                " AND (version = ? OR label = ?)",
                (v.upstream, v.version, v.label.value if v.label else None),
            ).fetchone()
            if taken is not None:
                what = f"version {v.version}" if taken[0] == v.version else f"label {taken[1]}"
                raise ConcurrentUpdate(f"{what} of {v.upstream!r} is already taken")
            self._run(
                "INSERT INTO upstream_versions (upstream, version, label, fingerprint, sealed,"
                " created_at, compromised_at, compromised_reason, compromised_source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    v.upstream,
                    v.version,
                    v.label.value if v.label else None,
                    v.fingerprint,
                    sealed,
                    c.iso(v.created_at),
                    c.iso(v.compromised_at),
                    v.compromised_reason,
                    v.compromised_source,
                ),
            )
            self._write(
                "UPDATE upstreams SET last_rotated_at = ? WHERE name = ?",
                (c.iso(v.created_at), v.upstream),
            )

    def set_upstream_labels(self, name: str, labels: Mapping[int, Label | None]) -> None:
        given = [lb.value for lb in labels.values() if lb is not None]
        if len(given) != len(set(given)):
            raise ValueError("a label can be given to only one version")
        with self.transaction():
            known = {
                int(r[0])
                for r in self._run(
                    "SELECT version FROM upstream_versions WHERE upstream = ?", (name,)
                ).fetchall()
            }
            for version in labels:
                if version not in known:
                    raise KeyNotFound(f"upstream credential {name!r} has no version {version}")
            for version in labels:  # free every label first: the unique index checks each row
                self._run(
                    "UPDATE upstream_versions SET label = NULL WHERE upstream = ? AND version = ?",
                    (name, version),
                )
            for label in given:
                self._run(
                    "UPDATE upstream_versions SET label = NULL WHERE upstream = ? AND label = ?",
                    (name, label),
                )
            for version, new_label in labels.items():
                if new_label is not None:
                    self._run(
                        "UPDATE upstream_versions SET label = ? WHERE upstream = ? AND version = ?",
                        (new_label.value, name, version),
                    )
            self._run("UPDATE generation SET value = value + 1 WHERE id = 1")

    def get_sealed_upstream(self, name: str, version: int) -> bytes:
        with self._lock:
            row = self._run(
                "SELECT sealed FROM upstream_versions WHERE upstream = ? AND version = ?",
                (name, version),
            ).fetchone()
        if row is None:
            raise KeyNotFound(f"upstream credential {name!r} has no version {version}")
        return c.blob(row[0])

    @decodes
    def iter_sealed_upstreams(self) -> Iterator[SealedUpstream]:
        with self._read():
            rows = self._run(
                "SELECT upstream, version, sealed FROM upstream_versions ORDER BY upstream, version"
            ).fetchall()
        return iter([SealedUpstream(r[0], int(r[1]), c.blob(r[2])) for r in rows])

    def replace_sealed_upstream(self, name: str, version: int, sealed: bytes) -> None:
        if not self._write(
            "UPDATE upstream_versions SET sealed = ? WHERE upstream = ? AND version = ?",
            (sealed, name, version),
        ):
            raise KeyNotFound(f"upstream credential {name!r} has no version {version}")

    @decodes
    def find_upstream_versions(self, fingerprint: str) -> list[UpstreamVersion]:
        with self._lock:
            rows = self._run(
                f"SELECT {c.VERSION_COLUMNS} FROM upstream_versions WHERE fingerprint = ?"  # noqa: S608 - constant column lists
                " ORDER BY upstream, version",
                (fingerprint,),
            ).fetchall()
        return [c.version_from_row(r) for r in rows]

    @decodes
    def mark_upstream_compromised(
        self, name: str, version: int, at: datetime, reason: str, source: str
    ) -> UpstreamVersion:
        with self.transaction():
            changed = self._run(
                "UPDATE upstream_versions SET compromised_at = ?, compromised_reason = ?,"
                " compromised_source = ? WHERE upstream = ? AND version = ?"
                " AND compromised_at IS NULL",
                (c.iso(at), reason, source, name, version),
            ).rowcount
            row = self._run(
                f"SELECT {c.VERSION_COLUMNS} FROM upstream_versions"  # noqa: S608 - constant column lists
                " WHERE upstream = ? AND version = ?",
                (name, version),
            ).fetchone()
            if row is None:
                raise KeyNotFound(f"upstream credential {name!r} has no version {version}")
            if changed:
                self._run("UPDATE generation SET value = value + 1 WHERE id = 1")
            return c.version_from_row(row)

    # -- virtual keys ---------------------------------------------------------------------

    def add_virtual_key(self, key: VirtualKey, secret: KeySecretHash) -> None:
        with self.transaction():
            if self._run("SELECT 1 FROM virtual_keys WHERE key_id = ?", (key.key_id,)).fetchone():
                raise AlreadyExists(f"virtual key {key.key_id} already exists")
            marks = ",".join("?" * 17)
            self._run(
                f"INSERT INTO virtual_keys ({c.KEY_COLUMNS}) VALUES ({marks})",  # noqa: S608 - constant column lists
                c.key_params(key),
            )
            self.add_key_secret(secret)

    @decodes
    def get_virtual_key(self, key_id: str) -> VirtualKey | None:
        with self._lock:
            row = self._run(
                f"SELECT {c.KEY_COLUMNS} FROM virtual_keys WHERE key_id = ?",  # noqa: S608 - constant column lists
                (key_id,),
            ).fetchone()
        return None if row is None else c.key_from_row(row)

    @decodes
    def list_virtual_keys(self) -> list[VirtualKey]:
        with self._lock:
            rows = self._run(
                f"SELECT {c.KEY_COLUMNS} FROM virtual_keys ORDER BY created_at, key_id"  # noqa: S608 - constant column lists
            ).fetchall()
        return [c.key_from_row(r) for r in rows]

    def revoke_virtual_key(self, key_id: str, at: datetime) -> VirtualKey:
        with self.transaction():
            self._write(
                "UPDATE virtual_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (c.iso(at), key_id),
            )
            key = self.get_virtual_key(key_id)
        if key is None:
            raise KeyNotFound(f"no virtual key {key_id}")
        return key

    def touch_virtual_keys(self, last_used: Mapping[str, datetime]) -> None:
        with self.transaction():
            for key_id, at in last_used.items():
                self._run(
                    "UPDATE virtual_keys SET last_used_at = ? WHERE key_id = ?"
                    " AND (last_used_at IS NULL OR last_used_at < ?)",
                    (c.iso(at), key_id, c.iso(at)),
                )

    def add_key_secret(self, secret: KeySecretHash) -> None:
        s = secret
        with self.transaction():
            if not self._run("SELECT 1 FROM virtual_keys WHERE key_id = ?", (s.key_id,)).fetchone():
                raise KeyNotFound(f"no virtual key {s.key_id}")
            self._write(
                "INSERT INTO key_secrets (key_id, digest, created_at, valid_until)"
                " VALUES (?, ?, ?, ?)",
                (s.key_id, s.digest, c.iso(s.created_at), c.iso(s.valid_until)),
            )

    def set_key_secret_valid_until(self, key_id: str, digest: bytes, at: datetime) -> None:
        if not self._write(
            "UPDATE key_secrets SET valid_until = ? WHERE key_id = ? AND digest = ?",
            (c.iso(at), key_id, digest),
        ):
            raise KeyNotFound(f"no such secret for virtual key {key_id}")

    @decodes
    def list_key_secrets(self, key_id: str | None = None) -> list[KeySecretHash]:
        sql = "SELECT key_id, digest, created_at, valid_until FROM key_secrets"
        with self._lock:
            rows = (
                self._run(sql + " WHERE key_id = ? ORDER BY created_at", (key_id,))
                if key_id is not None
                else self._run(sql + " ORDER BY key_id, created_at")
            ).fetchall()
        return [KeySecretHash(r[0], c.blob(r[1]), c.dt_req(r[2]), c.dt(r[3])) for r in rows]


def open_sqlite(path: str | Path, **kwargs: int) -> SqliteStore:
    """Open (creating if needed) a SQLite store; errors are :class:`KeyguardError` subclasses."""
    try:
        return SqliteStore(path, **kwargs)
    except KeyguardError:
        raise
    except OSError as exc:
        raise StorageUnavailable(f"cannot open database {path}: {exc.strerror}") from exc
