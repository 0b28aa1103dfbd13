"""Upstream rotation through the OpenAI Admin API: a resumable state machine.

``create -> test -> finish -> retire`` (see :mod:`keyguard.domain.rotation`). The record is
saved (compare-and-set on its state) after every step, and the lease ``rotation:<name>`` is held
while a process drives it, so one rotation per credential is in flight; a crashed run is
continued with :meth:`UpstreamRotator.resume`. ``after_step`` is called with the name of each
step just completed (``creating``, ``create:api``, ``created``, ``tested``, ``finished``,
``retire:api``, ``retired``): the fault-injection tests kill the process there.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta

from keyguard.domain.audit import AuditEvent
from keyguard.domain.records import Label, UpstreamCredential
from keyguard.domain.rotation import (
    RotationState,
    ServiceAccountLink,
    UpstreamRotation,
    retire_decision,
)
from keyguard.errors import ConcurrentUpdate, ConfigError, KeyNotFound, VaultError
from keyguard.rotation.admin_api import AdminApi, Endpoint, check_key
from keyguard.rotation.lease import hold, new_holder
from keyguard.vault.vault import Vault

S = RotationState
#: builds the pinned endpoint (base URL + TLS context) of an upstream credential
Connect = Callable[[UpstreamCredential], Endpoint]


@dataclass(frozen=True)
class RotationPolicy:
    """How long the old key stays usable: at least ``grace``; at most ``max_grace``."""

    grace: timedelta = timedelta(hours=1)
    max_grace: timedelta = timedelta(hours=24)
    lease_ttl: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.grace < timedelta(0) or self.max_grace < self.grace:
            raise ValueError("need 0 <= grace <= max_grace")


def check_project(cred: UpstreamCredential, project_id: str) -> None:
    """Refuse an admin key acting on another project than the one the credential's requests
    name (``OpenAI-Project``): a key created there passes ``GET /models`` without that header,
    then OpenAI refuses every proxied request with it (``mismatched_project``)."""
    if cred.project and cred.project != project_id:
        raise ConfigError(
            f"upstream credential {cred.name!r} sends OpenAI-Project {cred.project}, but its"
            f" admin key acts on project {project_id}: a key created there would be refused."
            f" Set the admin key again with --project-id {cred.project}"
        )


class UpstreamRotator:
    """Runs upstream rotations of one vault; one instance per process is enough."""

    def __init__(
        self,
        vault: Vault,
        connect: Connect,
        *,
        policy: RotationPolicy | None = None,
        actor: str = "system",
        source: str = "rotation",
        holder: str | None = None,
        after_step: Callable[[str], None] | None = None,
    ) -> None:
        self.vault = vault
        self._connect = connect
        self.policy = policy or RotationPolicy()
        self._actor = actor
        self._source = source
        self._holder = holder or new_holder()
        self._hook = after_step or (lambda step: None)
        self._renew: Callable[[], None] = lambda: None

    @property
    def connect(self) -> Connect:
        """How this rotator reaches an upstream (emergency revoke uses the same)."""
        return self._connect

    @property
    def holder(self) -> str:
        """This process's lease holder id (``host:pid:nonce``)."""
        return self._holder

    # -- public ---------------------------------------------------------------------------

    def start(self, name: str) -> UpstreamRotation:
        """Begin a rotation of ``name`` and drive it as far as it can go now."""
        store = self.vault.store
        with self._lease(name):
            admin = self.vault.admin_key_record(name)
            if admin is None:
                raise KeyNotFound(
                    f"upstream credential {name!r} has no admin key: set one with 'keyguard"
                    f" upstream admin-key set {name}', or rotate by hand with"
                    f" 'keyguard upstream rotate {name}'"
                )
            check_project(self.vault.get_upstream(name), admin.project_id)
            existing = store.get_rotation(name)
            if existing is not None and not existing.state.terminal:
                raise ConcurrentUpdate(
                    f"a rotation of {name!r} is in flight ({existing.state.value}):"
                    " continue it with 'keyguard rotate --resume'"
                )
            current = self.vault.get_upstream(name).version_with(Label.CURRENT)
            now = self.vault.now()
            rid = uuid.uuid4().hex[:12]
            record = UpstreamRotation(
                upstream=name,
                rotation_id=rid,
                state=S.CREATING,
                project_id=admin.project_id,
                account_name=f"keyguard-{name}-{rid}",
                started_at=now,
                updated_at=now,
                grace=self.policy.grace,
                max_grace=self.policy.max_grace,
                old_version=current.version if current else None,
            )
            expect = (existing.rotation_id, existing.state) if existing else None
            with store.transaction():
                store.save_rotation(record, expect)
                self._audit("upstream.rotate.start", record, old_version=record.old_version)
            self._hook(S.CREATING.value)
            return self._drive(record)

    def resume(self, name: str) -> UpstreamRotation | None:
        """Continue the rotation of ``name`` where it stopped (``None``: there is none)."""
        with self._lease(name):
            record = self.vault.store.get_rotation(name)
            if record is None or record.state.terminal:
                return record
            return self._drive(record)

    def in_flight(self) -> list[UpstreamRotation]:
        return [r for r in self.vault.store.list_rotations() if not r.state.terminal]

    def abort(self, name: str) -> UpstreamRotation:
        """Give up a rotation that has not switched yet: delete its new service account and
        drop the PENDING version's label."""
        with self._lease(name):
            r = self.vault.store.get_rotation(name)
            if r is None or r.state.terminal:
                raise KeyNotFound(f"no rotation of {name!r} in flight")
            if r.state is S.FINISHED:
                raise VaultError("the rotation already switched keys: let it retire instead")
            done = self.abort_unswitched(name)
            assert done is not None
            return done

    def locked(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Hold the rotation lease of ``name`` (emergency revoke runs under it)."""
        return self._lease(name)

    def abort_unswitched(self, name: str) -> UpstreamRotation | None:
        """Abort the rotation of ``name`` if it has not switched yet (call under the lease);
        ``None`` when there is nothing to abort."""
        store = self.vault.store
        r = store.get_rotation(name)
        if r is None or r.state.terminal or r.state is S.FINISHED:
            return None
        api = self._api(name, "rotation abort")
        for sa in api.list_service_accounts():
            if sa.name == r.account_name:
                api.delete_service_account(sa.id)
        with store.transaction():
            if r.new_version is not None:
                pending = self.vault.get_upstream(name).version_with(Label.PENDING)
                if pending is not None and pending.version == r.new_version:
                    store.set_upstream_labels(name, {r.new_version: None})
                if r.new_account_id:
                    store.mark_service_account_deleted(name, r.new_account_id, self.vault.now())
            done = r.advance(S.ABORTED, self.vault.now(), detail="aborted")
            self._save(done, r)
            self._audit("upstream.rotate.abort", done, state=r.state.value)
        return done

    # -- the steps ------------------------------------------------------------------------

    def _drive(self, r: UpstreamRotation) -> UpstreamRotation:
        steps = {S.CREATING: self._create, S.CREATED: self._test, S.TESTED: self._finish}
        while r.state in steps:
            self._refuse_compromised(r)
            r = steps[r.state](r)
            self._renew()
            self._hook(r.state.value)
        if r.state is S.FINISHED:
            r = self._retire(r)
            if r.state is S.RETIRED:
                self._hook(r.state.value)
        return r

    def _refuse_compromised(self, r: UpstreamRotation) -> None:
        """Never test or promote a new key that was marked compromised meanwhile."""
        if r.new_version is None:
            return
        new = self.vault.get_upstream(r.upstream).version_number(r.new_version)
        if new is not None and new.compromised:
            raise VaultError(
                f"the new key of {r.upstream!r} (version {r.new_version}) is marked compromised:"
                f" abort this rotation ('keyguard rotate {r.upstream} --abort') and start again"
            )

    def _create(self, r: UpstreamRotation) -> UpstreamRotation:
        name = r.upstream
        api = self._api(name, "rotation create")
        for sa in api.list_service_accounts():  # a crash after the API call left this behind
            if sa.name == r.account_name:
                api.delete_service_account(sa.id)
        new = api.create_service_account(r.account_name)
        self._hook("create:api")
        store = self.vault.store
        try:
            with store.transaction():
                version = self.vault.add_upstream_version(
                    name, new.api_key, label=Label.PENDING, actor=self._actor, source=self._source
                )
                now = self.vault.now()
                store.add_service_account(
                    ServiceAccountLink(
                        name, version.version, r.project_id, new.account.id, new.api_key_id, now
                    )
                )
                nxt = r.advance(
                    S.CREATED, now, new_version=version.version, new_account_id=new.account.id
                )
                self._save(nxt, r)
        except BaseException:
            api.delete_service_account(new.account.id)  # never leave an account we cannot use
            raise
        return nxt

    def _test(self, r: UpstreamRotation) -> UpstreamRotation:
        cred = self.vault.get_upstream(r.upstream)
        pending = cred.version_with(Label.PENDING)
        if pending is None or pending.version != r.new_version:
            raise VaultError(
                f"the PENDING version of {r.upstream!r} changed under the rotation: abort it"
            )
        _, secret = self.vault.upstream_secret(
            r.upstream, Label.PENDING, audit=True, actor=self._actor, source=self._source
        )
        check_key(self._connect(cred), secret)
        nxt = r.advance(S.TESTED, self.vault.now())
        self._save(nxt, r)
        return nxt

    def _finish(self, r: UpstreamRotation) -> UpstreamRotation:
        store = self.vault.store
        assert r.new_version is not None
        with store.transaction():
            current = self.vault.get_upstream(r.upstream).version_with(Label.CURRENT)
            self.vault.set_upstream_label(
                r.upstream, r.new_version, Label.CURRENT, actor=self._actor, source=self._source
            )
            now = self.vault.now()
            old = current.version if current is not None else None
            nxt = r.advance(S.FINISHED, now, finished_at=now, old_version=old)
            self._save(nxt, r)
            self._audit("upstream.rotate.finish", nxt, old_version=old, new_version=r.new_version)
        return nxt

    def _retire(self, r: UpstreamRotation) -> UpstreamRotation:
        name = r.upstream
        store = self.vault.store
        link = next(
            (
                s
                for s in store.list_service_accounts(name)
                if s.version == r.old_version and s.deleted_at is None
            ),
            None,
        )
        api = self._api(name, "rotation retire") if link is not None else None
        last_used = None
        gone = False
        current_gone = None
        cred = self.vault.get_upstream(name)
        if api is not None and link is not None:
            keys = {k.id: k for k in api.list_api_keys()}
            old_key = keys.get(link.api_key_id or "")
            gone = old_key is None
            last_used = old_key.last_used_at if old_key is not None else None
            current_gone = self._current_gone(cred, keys)
        now = self.vault.now()
        old = cred.version_number(r.old_version) if r.old_version is not None else None
        compromised = old is not None and old.compromised
        if current_gone is not None and not gone and not compromised:
            # the old key is the gateway's only working one (its fallback): never retire it
            waiting = r.advance(S.FINISHED, now, detail=current_gone)
            self._save(waiting, r)
            return waiting
        check = retire_decision(r, last_used, now, old_compromised=compromised)
        if not check.retire and not gone:
            waiting = r.advance(
                S.FINISHED, now, old_last_used=last_used, old_observed=True, detail=check.reason
            )
            self._save(waiting, r)
            return waiting
        if api is not None and link is not None:
            api.delete_service_account(link.account_id)
            self._hook("retire:api")
        detail = check.reason
        if link is None:
            detail = (
                f"version {r.old_version} was not created by keyguard: revoke it in the OpenAI"
                " dashboard"
            )
        with store.transaction():
            if link is not None:
                store.mark_service_account_deleted(name, link.account_id, now)
            cred = self.vault.get_upstream(name)
            prev = cred.version_with(Label.PREVIOUS)
            if prev is not None and prev.version == r.old_version:
                store.set_upstream_labels(name, {prev.version: None})
            done = r.advance(S.RETIRED, now, detail=detail)
            self._save(done, r)
            self._audit(
                "upstream.rotate.retire",
                done,
                old_version=r.old_version,
                account_deleted=link is not None,
                reason=detail,
            )
        self.vault.clear_caches()
        return done

    # -- helpers --------------------------------------------------------------------------

    def _current_gone(self, cred: UpstreamCredential, keys: Mapping[str, object]) -> str | None:
        """Why the old key must stay: the CURRENT key's service account is gone at OpenAI
        (deleted out of band); ``None`` when CURRENT is not known to be gone."""
        current = cred.version_with(Label.CURRENT)
        link = next(
            (
                s
                for s in self.vault.store.list_service_accounts(cred.name)
                if current is not None and s.version == current.version and s.deleted_at is None
            ),
            None,
        )
        if link is None or not link.api_key_id or link.api_key_id in keys:
            return None
        return (
            f"the CURRENT key's service account ({link.account_id}) is gone at OpenAI: the old"
            f" key is kept as the gateway's fallback; give {cred.name!r} a working key"
            f" ('keyguard upstream rotate {cred.name}')"
        )

    @contextlib.contextmanager
    def _lease(self, name: str) -> Iterator[None]:
        """Hold ``rotation:<name>``; :meth:`_drive` renews it after each step."""
        with hold(
            self.vault.store,
            f"rotation:{name}",
            self._holder,
            self.vault.now,
            self.policy.lease_ttl,
            what=f"a rotation of {name!r}",
        ) as renew:
            self._renew = renew
            try:
                yield
            finally:
                self._renew = lambda: None

    def _api(self, name: str, purpose: str) -> AdminApi:
        record, secret = self.vault.reveal_admin_key(
            name, purpose=purpose, actor=self._actor, source=self._source
        )
        return AdminApi(self._connect(self.vault.get_upstream(name)), secret, record.project_id)

    def _save(self, new: UpstreamRotation, old: UpstreamRotation) -> None:
        self.vault.store.save_rotation(new, (old.rotation_id, old.state))

    def _audit(self, action: str, r: UpstreamRotation, **details: object) -> None:
        self.vault.append(
            AuditEvent(
                action,
                self._actor,
                r.upstream,
                self._source,
                details={"rotation_id": r.rotation_id, "state": r.state.value, **details},
            )
        )
