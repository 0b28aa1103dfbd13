"""Two replicas on one PostgreSQL vault: concurrent rotations of one upstream (the lease and the
compare-and-set hold across connections), and a scheduled pass per replica at once."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fakes.admin_api import FakeOpenAIPlatform
from keyguard.crypto.master import MasterKey
from keyguard.domain.records import Label
from keyguard.domain.rotation import RotationState, ServiceAccountLink
from keyguard.domain.secret import Secret
from keyguard.errors import ConcurrentUpdate
from keyguard.rotation.schedule import run_due
from keyguard.storage.postgres import PostgresStore
from keyguard.vault import Vault
from rotation.conftest import PROJECT, rotator
from vault.pg_fixtures import pg_schema, pg_store_url, pg_url

__all__ = ["pg_schema", "pg_store_url", "pg_url"]
S = RotationState


@pytest.fixture
def replicas(pg_store_url: str, platform: FakeOpenAIPlatform) -> Any:
    master = MasterKey.generate()
    first = Vault.create(PostgresStore(pg_store_url), master, actor="tester", source="test")
    account = platform.add_service_account("created-in-dashboard")
    first.add_upstream(
        "default", Secret(account.key.value), base_url=platform.base_url, project=PROJECT
    )
    first.set_admin_key("default", Secret(platform.new_admin_key()), project_id=PROJECT)
    first.store.add_service_account(
        ServiceAccountLink("default", 1, PROJECT, account.id, account.key.id, first.now())
    )
    vaults = [first] + [Vault.open(PostgresStore(pg_store_url), master) for _ in range(3)]
    yield vaults
    for v in vaults:
        v.close()


def _race(vaults: list[Vault], work: Any) -> list[object]:
    barrier = threading.Barrier(len(vaults))
    outcomes: list[object] = []

    def run(v: Vault) -> None:
        barrier.wait()
        try:
            outcomes.append(work(v))
        except ConcurrentUpdate as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run, args=(v,)) for v in vaults]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def test_concurrent_rotations_on_postgres_one_wins(
    replicas: list[Vault], platform: FakeOpenAIPlatform, connect: Any
) -> None:
    outcomes = _race(replicas, lambda v: rotator(v, connect, grace=3600.0).start("default").state)
    assert [o for o in outcomes if o is S.FINISHED] == [S.FINISHED], outcomes
    assert len(platform.projects[PROJECT]) == 2
    cred = replicas[0].get_upstream("default")
    assert [v.label for v in cred.versions] == [Label.PREVIOUS, Label.CURRENT]


def test_scheduled_passes_of_replicas_on_postgres_replace_a_leak_once(
    replicas: list[Vault], platform: FakeOpenAIPlatform, connect: Any
) -> None:
    replicas[0].mark_upstream_compromised("default", 1, "leaked", source="cli")
    outcomes = _race(replicas, lambda v: run_due(rotator(v, connect)))
    done = [o for o in outcomes if not isinstance(o, ConcurrentUpdate)]
    assert sum(len(r.emergency) for r in done) == 1, outcomes  # type: ignore[attr-defined]
    cred = replicas[0].get_upstream("default")
    assert [v.label for v in cred.versions] == [None, Label.CURRENT]
    assert len(platform.projects[PROJECT]) == 1
