"""Settings, built once at the edge (CLI, app factory, library entry points).

Precedence: explicit value (CLI flag / function argument) > ``KEYGUARD_*`` environment variable >
``keyguard.toml`` (in the keyguard home, or the file named by ``KEYGUARD_CONFIG``) > default.
Inner code never reads this module's inputs: it receives plain values through constructors.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from keyguard.domain import redaction
from keyguard.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_HOME = "~/.keyguard"
CONFIG_FILE_NAME = "keyguard.toml"


#: ``scheme://userinfo@``: greedy, so up to the LAST ``@`` -- a password pasted without
#: percent-encoding may hold ``/``, ``#``, ``?``, ``[`` or ``@``, which ``urlsplit`` misreads
_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)@")


def _url_password(url: str) -> str | None:
    match = _USERINFO_RE.match(url)
    if match is None or ":" not in match.group(2):
        return None
    return match.group(2).split(":", 1)[1]


def redact_url(url: str) -> str:
    """``scheme://user:secret@host/db`` -> ``scheme://user:***@host/db`` (also ``password=``)."""
    match = _USERINFO_RE.match(url)
    if match is not None and ":" in match.group(2):
        user = match.group(2).split(":", 1)[0]
        url = f"{match.group(1)}{user}:***@{url[match.end() :]}"
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)


def _register_url_secret(url: str | None) -> None:
    """Make value-based redaction remove a URL's password from every log line and error."""
    password = _url_password(url) if url else None
    if password:
        redaction.register(password)
        redaction.register(unquote(password))  # as a driver may show it, decoded


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected a boolean (true/false)")


def _as_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(p.strip() for p in str(value).split(",") if p.strip())


def _as_opt_path(value: Any) -> Path | None:
    return Path(str(value)).expanduser() if value not in (None, "") else None


@dataclass(frozen=True)
class Settings:
    """Every setting keyguard reads; see the README's configuration table."""

    home: Path = field(default_factory=lambda: Path(DEFAULT_HOME).expanduser())
    database_url: str = field(default="", repr=False)  # may hold a password: see safe_*
    redis_url: str | None = field(default=None, repr=False)
    # gateway
    host: str = "127.0.0.1"
    port: int = 8787
    workers: int = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    trusted_proxies: tuple[str, ...] = ()
    upstream_ca_bundle: Path | None = None
    upstream: str = "default"
    # library / run
    dotenv: bool = True
    # limits
    prices_file: Path | None = None
    limits_degrade: bool = False
    # admin API: client networks allowed to reach /admin/ (empty: any; tokens are still needed)
    admin_cidrs: tuple[str, ...] = ()

    @property
    def safe_database_url(self) -> str:
        """The database URL with any password replaced by ``***`` (for output)."""
        return redact_url(self.database_url)

    @property
    def safe_redis_url(self) -> str | None:
        """The Redis URL with any password replaced by ``***`` (for output)."""
        return redact_url(self.redis_url) if self.redis_url else None

    @property
    def db_path(self) -> Path | None:
        """The SQLite file path when the database URL is SQLite, else ``None``."""
        if self.database_url.startswith("sqlite:///"):
            raw = self.database_url[len("sqlite:///") :]
            if raw == ":memory:":
                return None
            path = Path(raw).expanduser()
            return path if path.is_absolute() else self.home / path
        return None


#: setting -> (env var, parser); the one table of environment variables
_ENV: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "home": ("KEYGUARD_HOME", lambda v: Path(str(v)).expanduser()),
    "database_url": ("KEYGUARD_DATABASE_URL", str),
    "redis_url": ("KEYGUARD_REDIS_URL", lambda v: str(v) or None),
    "host": ("KEYGUARD_HOST", str),
    "port": ("KEYGUARD_PORT", int),
    "workers": ("KEYGUARD_WORKERS", int),
    "tls_cert": ("KEYGUARD_TLS_CERT", _as_opt_path),
    "tls_key": ("KEYGUARD_TLS_KEY", _as_opt_path),
    "client_ca": ("KEYGUARD_CLIENT_CA", _as_opt_path),
    "trusted_proxies": ("KEYGUARD_TRUSTED_PROXIES", _as_tuple),
    "upstream_ca_bundle": ("KEYGUARD_UPSTREAM_CA_BUNDLE", _as_opt_path),
    "upstream": ("KEYGUARD_UPSTREAM", str),
    "dotenv": ("KEYGUARD_DOTENV", _as_bool),
    "prices_file": ("KEYGUARD_PRICES_FILE", _as_opt_path),
    "limits_degrade": ("KEYGUARD_LIMITS_DEGRADE", _as_bool),
    "admin_cidrs": ("KEYGUARD_ADMIN_CIDRS", _as_tuple),
}

#: environment variables that are settings but not secrets, for documentation
ENV_VARS = tuple(env for env, _ in _ENV.values())


def _parse(name: str, value: Any, source: str) -> Any:
    parser = _ENV[name][1]
    try:
        return parser(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value {value!r} for {name} (from {source}): {exc}") from None


def _read_toml(path: Path, *, required: bool = False) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        if required:  # named explicitly: a typo must not silently drop its settings
            raise ConfigError(f"config file {path} (from KEYGUARD_CONFIG) does not exist") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    section = data.get("keyguard", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [keyguard] must be a table")
    unknown = sorted(set(section) - set(_ENV))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return dict(section)


def load_settings(
    overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings: ``overrides`` (flags) > ``env`` > keyguard.toml > defaults.

    ``overrides`` values of ``None`` mean "not given". ``env`` defaults to ``os.environ``.
    """
    environ = os.environ if env is None else env
    given = {k: v for k, v in (overrides or {}).items() if v is not None and v != ()}
    unknown = sorted(set(given) - {f.name for f in fields(Settings)})
    if unknown:
        raise TypeError(f"unknown settings: {unknown}")

    values: dict[str, Any] = {}
    # home first: the config file lives there
    if "home" in given:
        values["home"] = _parse("home", given["home"], "flag")
    elif environ.get("KEYGUARD_HOME"):
        values["home"] = _parse("home", environ["KEYGUARD_HOME"], "KEYGUARD_HOME")
    home: Path = values.get("home", Settings().home)

    config_path = Path(environ["KEYGUARD_CONFIG"]) if environ.get("KEYGUARD_CONFIG") else None
    if config_path is not None:
        file_values = _read_toml(config_path, required=True)
    else:
        file_values = _read_toml(home / CONFIG_FILE_NAME)
    for name in _ENV:
        if name in values:
            continue
        env_name = _ENV[name][0]
        if name in given:
            values[name] = _parse(name, given[name], "flag")
        elif environ.get(env_name) not in (None, ""):
            values[name] = _parse(name, environ[env_name], env_name)
        elif name in file_values:
            values[name] = _parse(name, file_values[name], CONFIG_FILE_NAME)
    if not values.get("database_url"):
        values["database_url"] = f"sqlite:///{values.get('home', home) / 'keyguard.db'}"
    settings = Settings(**values)
    _register_url_secret(settings.database_url)
    _register_url_secret(settings.redis_url)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if not (0 <= s.port <= 65535):
        raise ConfigError(f"invalid value {s.port!r} for port: must be 0-65535")
    if s.workers < 1:
        raise ConfigError(f"invalid value {s.workers!r} for workers: must be >= 1")
    if (s.tls_cert is None) != (s.tls_key is None):
        raise ConfigError("tls_cert and tls_key must be given together")
    if s.client_ca is not None and s.tls_cert is None:
        raise ConfigError("client_ca (mTLS) needs tls_cert and tls_key")
    scheme = s.database_url.split(":", 1)[0]
    if scheme not in {"sqlite", "postgresql", "postgres"}:
        raise ConfigError(
            f"invalid value for database_url: unsupported scheme {scheme!r} "
            "(use sqlite:///path or postgresql://...)"
        )
