"""Metadata, KEKs, upstream credentials and virtual keys, written once for both SQL backends.

The :class:`~keyguard.storage.ports.MetaStore`, :class:`~keyguard.storage.ports.UpstreamStore`
and :class:`~keyguard.storage.ports.VirtualKeyStore` parts of the store, over the hooks of
:class:`~keyguard.storage.sqlbase.SqlBase` (see there for the SQL subset they use). Reads that
need two tables are single joined queries, so each sees one snapshot on either backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime

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
from keyguard.storage.sqlbase import Row, SqlBase, decodes


def _prefixed(columns: str, alias: str) -> str:
    return ", ".join(f"{alias}.{col.strip()}" for col in columns.split(","))


def _marks(columns: str) -> str:
    return ", ".join("?" * len(columns.split(",")))


# one row per version (or one with NULL version columns): a credential and its versions at once
_UPSTREAMS_JOINED = (
    f"SELECT {_prefixed(c.UPSTREAM_COLUMNS, 'u')}, {_prefixed(c.VERSION_COLUMNS, 'v')}"  # noqa: S608 - constant column lists
    " FROM upstreams u LEFT JOIN upstream_versions v ON v.upstream = u.name"
)
_GET_UPSTREAM = _UPSTREAMS_JOINED + " WHERE u.name = ? ORDER BY v.version"
_LIST_UPSTREAMS = _UPSTREAMS_JOINED + " ORDER BY u.name, v.version"
_N_UPSTREAM = len(c.UPSTREAM_COLUMNS.split(","))
_INSERT_UPSTREAM = (
    f"INSERT INTO upstreams ({c.UPSTREAM_COLUMNS}) VALUES ({_marks(c.UPSTREAM_COLUMNS)})"  # noqa: S608 - constant column lists
    " ON CONFLICT (name) DO NOTHING"
)
_INSERT_KEY = (
    f"INSERT INTO virtual_keys ({c.KEY_COLUMNS}) VALUES ({_marks(c.KEY_COLUMNS)})"  # noqa: S608 - constant column lists
    " ON CONFLICT (key_id) DO NOTHING"
)
_GET_KEY = f"SELECT {c.KEY_COLUMNS} FROM virtual_keys WHERE key_id = ?"  # noqa: S608 - constant column lists
_LIST_KEYS = f"SELECT {c.KEY_COLUMNS} FROM virtual_keys ORDER BY created_at, key_id"  # noqa: S608 - constant column lists
_SECRETS = "SELECT key_id, digest, created_at, valid_until FROM key_secrets"
_SECRETS_OF = _SECRETS + " WHERE key_id = ? ORDER BY created_at"
_ALL_SECRETS = _SECRETS + " ORDER BY key_id, created_at"
_VERSION = f"SELECT {c.VERSION_COLUMNS} FROM upstream_versions"  # noqa: S608 - constant column lists


def _group_upstreams(rows: Sequence[Row]) -> list[UpstreamCredential]:
    heads: dict[str, Row] = {}
    versions: dict[str, list[UpstreamVersion]] = {}
    for row in rows:
        head, version = row[:_N_UPSTREAM], row[_N_UPSTREAM:]
        heads.setdefault(head[0], head)
        found = versions.setdefault(head[0], [])
        if version[0] is not None:
            found.append(c.version_from_row(version))
    return [c.upstream_from_row(head, versions[name]) for name, head in heads.items()]


def _no_version(name: str, version: int) -> KeyNotFound:
    return KeyNotFound(f"upstream credential {name!r} has no version {version}")


class VaultTables(SqlBase):
    """Metadata, KEKs, upstream credentials and virtual keys (every write bumps the
    generation, except ``last_used_at`` updates)."""

    # -- metadata and KEKs ----------------------------------------------------------------

    def get_meta(self, name: str) -> bytes | None:
        row = self._one("SELECT value FROM meta WHERE name = ?", (name,))
        return None if row is None else c.blob(row[0])

    def set_meta(self, name: str, value: bytes) -> None:
        self._write(
            "INSERT INTO meta (name, value) VALUES (?, ?)"
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
                "INSERT INTO keks (kek_id, wrapped, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (kek_id) DO NOTHING",
                (kek.kek_id, kek.wrapped, c.iso(kek.created_at)),
            ):
                raise AlreadyExists(f"KEK {kek.kek_id} already exists")
            self._bump()

    def replace_kek(self, kek_id: int, wrapped: bytes) -> None:
        if not self._write("UPDATE keks SET wrapped = ? WHERE kek_id = ?", (wrapped, kek_id)):
            raise KeyNotFound(f"no KEK {kek_id}")

    # -- upstream credentials -------------------------------------------------------------

    def add_upstream(self, cred: UpstreamCredential) -> None:
        with self.transaction():
            if not self._run(_INSERT_UPSTREAM, c.upstream_params(cred)):
                raise AlreadyExists(f"upstream credential {cred.name!r} already exists")
            self._bump()

    @decodes
    def get_upstream(self, name: str) -> UpstreamCredential | None:
        found = _group_upstreams(self._all(_GET_UPSTREAM, (name,)))
        return found[0] if found else None

    @decodes
    def list_upstreams(self) -> list[UpstreamCredential]:
        return _group_upstreams(self._all(_LIST_UPSTREAMS))

    def delete_upstream(self, name: str) -> bool:
        with self.transaction():
            self._run("DELETE FROM upstream_versions WHERE upstream = ?", (name,))
            return bool(self._write("DELETE FROM upstreams WHERE name = ?", (name,)))

    def add_upstream_version(self, version: UpstreamVersion, sealed: bytes) -> None:
        v = version
        label = v.label.value if v.label else None
        with self.transaction():
            if not self._one("SELECT 1 FROM upstreams WHERE name = ?", (v.upstream,)):
                raise KeyNotFound(f"no upstream credential {v.upstream!r}")
            taken = self._one(
                "SELECT version, label FROM upstream_versions WHERE upstream = ?"
                " AND (version = ? OR label = ?)",
                (v.upstream, v.version, label),
            )
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
                "UPDATE upstreams SET last_rotated_at = ? WHERE name = ?",
                (c.iso(v.created_at), v.upstream),
            )

    def set_upstream_labels(self, name: str, labels: Mapping[int, Label | None]) -> None:
        given = [lb.value for lb in labels.values() if lb is not None]
        if len(given) != len(set(given)):
            raise ValueError("a label can be given to only one version")
        with self.transaction():
            rows = self._all("SELECT version FROM upstream_versions WHERE upstream = ?", (name,))
            known = {int(r[0]) for r in rows}
            for version in labels:
                if version not in known:
                    raise _no_version(name, version)
            # free every label involved first: the unique constraint checks each row at once
            self._run_many(
                "UPDATE upstream_versions SET label = NULL WHERE upstream = ? AND version = ?",
                [(name, version) for version in labels],
            )
            self._run_many(
                "UPDATE upstream_versions SET label = NULL WHERE upstream = ? AND label = ?",
                [(name, label) for label in given],
            )
            self._run_many(
                "UPDATE upstream_versions SET label = ? WHERE upstream = ? AND version = ?",
                [(lb.value, name, version) for version, lb in labels.items() if lb is not None],
            )
            self._bump()

    def get_sealed_upstream(self, name: str, version: int) -> bytes:
        row = self._one(
            "SELECT sealed FROM upstream_versions WHERE upstream = ? AND version = ?",
            (name, version),
        )
        if row is None:
            raise _no_version(name, version)
        return c.blob(row[0])

    @decodes
    def iter_sealed_upstreams(self) -> Iterator[SealedUpstream]:
        rows = self._all(
            "SELECT upstream, version, sealed FROM upstream_versions ORDER BY upstream, version"
        )
        return iter([SealedUpstream(r[0], int(r[1]), c.blob(r[2])) for r in rows])

    def replace_sealed_upstream(self, name: str, version: int, sealed: bytes) -> None:
        if not self._write(
            "UPDATE upstream_versions SET sealed = ? WHERE upstream = ? AND version = ?",
            (sealed, name, version),
        ):
            raise _no_version(name, version)

    @decodes
    def find_upstream_versions(self, fingerprint: str) -> list[UpstreamVersion]:
        rows = self._all(
            _VERSION + " WHERE fingerprint = ? ORDER BY upstream, version", (fingerprint,)
        )
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
            )
            row = self._one(_VERSION + " WHERE upstream = ? AND version = ?", (name, version))
            if row is None:
                raise _no_version(name, version)
            if changed:
                self._bump()
            return c.version_from_row(row)

    # -- virtual keys ---------------------------------------------------------------------

    def add_virtual_key(self, key: VirtualKey, secret: KeySecretHash) -> None:
        with self.transaction():
            if not self._run(_INSERT_KEY, c.key_params(key)):
                raise AlreadyExists(f"virtual key {key.key_id} already exists")
            self.add_key_secret(secret)

    @decodes
    def get_virtual_key(self, key_id: str) -> VirtualKey | None:
        row = self._one(_GET_KEY, (key_id,))
        return None if row is None else c.key_from_row(row)

    @decodes
    def list_virtual_keys(self) -> list[VirtualKey]:
        return [c.key_from_row(r) for r in self._all(_LIST_KEYS)]

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
        rows = [(c.iso(at), key_id, c.iso(at)) for key_id, at in last_used.items()]
        with self.transaction():
            self._run_many(
                "UPDATE virtual_keys SET last_used_at = ? WHERE key_id = ?"
                " AND (last_used_at IS NULL OR last_used_at < ?)",
                rows,
            )

    def add_key_secret(self, secret: KeySecretHash) -> None:
        s = secret
        with self.transaction():
            if not self._one("SELECT 1 FROM virtual_keys WHERE key_id = ?", (s.key_id,)):
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
        rows = self._all(_SECRETS_OF, (key_id,)) if key_id is not None else self._all(_ALL_SECRETS)
        return [KeySecretHash(r[0], c.blob(r[1]), c.dt_req(r[2]), c.dt(r[3])) for r in rows]
