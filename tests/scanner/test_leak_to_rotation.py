"""Leak -> revoke, end to end: `keyguard scan --revoke-managed` finds the CURRENT upstream key
of a vault that has an admin key, and the emergency rotation replaces it on the (fake) OpenAI
platform, so the leaked key stops working at once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner

from fakes.admin_api import FakeOpenAIPlatform
from keyguard.cli.main import cli
from keyguard.config import load_settings
from keyguard.crypto.master import MasterKey
from keyguard.domain.records import Label
from keyguard.domain.rotation import ServiceAccountLink
from keyguard.domain.secret import Secret
from keyguard.rotation.admin_api import AdminApiError, Endpoint, check_key, tls_context
from keyguard.wiring import create_vault, open_vault

PROJECT = "proj_scanleak"


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def platform(ca):
    with FakeOpenAIPlatform(ca, project_id=PROJECT) as p:
        yield p


def test_revoke_managed_rotates_a_leaked_current_key(tmp_path: Path, ca, platform) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYGUARD_", "OPENAI_"))}
    env.update(
        KEYGUARD_HOME=str(tmp_path / "home"),
        KEYGUARD_MASTER_KEY=MasterKey.generate().to_base64(),
        KEYGUARD_UPSTREAM_CA_BUNDLE=str(bundle),
    )
    settings = load_settings({"home": tmp_path / "home"})
    vault = create_vault(settings, env)
    first = platform.add_service_account("created-in-dashboard")
    leaked = first.key.value
    vault.add_upstream("default", Secret(leaked), base_url=platform.base_url, project=PROJECT)
    vault.set_admin_key("default", Secret(platform.new_admin_key()), project_id=PROJECT)
    vault.store.add_service_account(
        ServiceAccountLink("default", 1, PROJECT, first.id, first.key.id, vault.now())
    )
    vault.close()

    tree = tmp_path / "app"
    tree.mkdir()
    (tree / "settings.py").write_text(f'OPENAI_API_KEY = "{leaked}"\n')
    result = CliRunner().invoke(
        cli, ["scan", "--revoke-managed", str(tree)], env=env, catch_exceptions=False
    )
    assert result.exit_code == 1, result.output
    assert "emergency rotation of 'default': version 1 revoked, version 2 is CURRENT" in (
        result.output
    )
    assert leaked not in result.output

    vault = open_vault(settings, env)
    try:
        cred = vault.get_upstream("default")
        assert [(v.version, v.label) for v in cred.versions] == [(1, None), (2, Label.CURRENT)]
        # the leaked version is marked compromised (by the scan, before it was replaced)
        old, new = cred.versions
        assert old.compromised and old.compromised_source == "scan" and not new.compromised
        assert "settings.py:1" in (old.compromised_reason or "")
        actions = [r.action for r in vault.audit.list()]
        assert actions.index("upstream.compromised") < actions.index("upstream.emergency_revoke")
        assert leaked not in repr(vault.audit.list())
        endpoint = Endpoint(cred.base_url, ssl_context=tls_context(bundle), timeout=5.0)
        with pytest.raises(AdminApiError):
            check_key(endpoint, Secret(leaked, register=False))
        _, fresh = vault.upstream_secret("default")
        check_key(endpoint, fresh)
    finally:
        vault.close()
