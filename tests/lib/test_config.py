"""Settings precedence: flag > KEYGUARD_* env > keyguard.toml > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyguard.config import load_settings
from keyguard.errors import ConfigError


def test_precedence(tmp_path: Path) -> None:
    (tmp_path / "keyguard.toml").write_text('[keyguard]\nport = 9000\nhost = "127.0.0.5"\n')
    env = {"KEYGUARD_HOME": str(tmp_path), "KEYGUARD_PORT": "9100"}
    s = load_settings(env=env)
    assert (s.port, s.host) == (9100, "127.0.0.5")
    assert load_settings({"port": 9200}, env=env).port == 9200
    assert s.database_url == f"sqlite:///{tmp_path / 'keyguard.db'}"
    assert s.db_path == tmp_path / "keyguard.db"


def test_errors_name_the_setting(tmp_path: Path) -> None:
    env = {"KEYGUARD_HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match="KEYGUARD_PORT"):
        load_settings(env={**env, "KEYGUARD_PORT": "eighty"})
    (tmp_path / "keyguard.toml").write_text("[keyguard]\nbogus = 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_settings(env=env)


def test_database_url_secret_not_echoed(tmp_path: Path) -> None:
    env = {
        "KEYGUARD_HOME": str(tmp_path),
        "KEYGUARD_DATABASE_URL": "mysql://user:hunter2secret@db/x",
    }
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert "hunter2secret" not in str(info.value)


def test_tls_pairs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="together"):
        load_settings({"tls_cert": str(tmp_path / "c.pem")}, env={"KEYGUARD_HOME": str(tmp_path)})


def test_url_passwords_never_shown(tmp_path: Path) -> None:
    import secrets

    from keyguard.config import redact_url
    from keyguard.domain.redaction import redact

    pw = "pw" + secrets.token_hex(8)
    url = f"postgresql://kg:{pw}@127.0.0.1:5432/test"
    s = load_settings(
        {"database_url": url, "redis_url": f"redis://:{pw}@127.0.0.1:6379/0"},
        env={"KEYGUARD_HOME": str(tmp_path)},
    )
    assert pw not in repr(s) and pw not in s.safe_database_url and pw not in str(s.safe_redis_url)
    assert s.safe_database_url == "postgresql://kg:***@127.0.0.1:5432/test"
    assert redact_url(f"host=db password={pw} user=x") == "host=db password=*** user=x"
    assert pw not in redact(f"connection failed: {url}")  # registered for log redaction


def test_config_file_named_by_env_must_exist(tmp_path: Path) -> None:
    """A typo in KEYGUARD_CONFIG must not silently drop its settings (admin_cidrs, TLS, ...)."""
    env = {"KEYGUARD_HOME": str(tmp_path), "KEYGUARD_CONFIG": str(tmp_path / "kg.toml")}
    with pytest.raises(ConfigError, match="KEYGUARD_CONFIG"):
        load_settings(env=env)
    (tmp_path / "kg.toml").write_text('admin_cidrs = ["10.0.0.0/8"]\n')
    assert load_settings(env=env).admin_cidrs == ("10.0.0.0/8",)
    assert load_settings(env={"KEYGUARD_HOME": str(tmp_path)}).admin_cidrs == ()  # optional


@pytest.mark.parametrize("special", ["/", "#", "?", "[", "@", ":"])
def test_url_passwords_with_unencoded_special_characters_never_shown(
    tmp_path: Path, special: str
) -> None:
    """People paste passwords into URLs without percent-encoding them: still never shown."""
    import secrets

    from keyguard.domain.redaction import redact

    pw = f"pw{secrets.token_hex(4)}{special}{secrets.token_hex(4)}"
    url = f"postgresql://kg:{pw}@127.0.0.1:5432/test"
    s = load_settings({"database_url": url}, env={"KEYGUARD_HOME": str(tmp_path)})
    shown = s.safe_database_url
    assert pw not in shown and pw.split(special)[1] not in shown
    assert shown.startswith("postgresql://kg:***@")
    assert pw not in redact(f"cannot use the database {url}")
