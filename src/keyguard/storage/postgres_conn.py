"""Where a PostgreSQL store connects to, and the one place psycopg errors become keyguard errors.

:func:`parse_target` turns a ``postgresql://`` (or ``postgres://``, or libpq ``key=value``)
string into connection parameters, an optional schema and a *display* form without the password.
:meth:`PgTarget.wrap` maps a driver error to :class:`StorageUnavailable` (cannot reach, busy),
:class:`ConcurrentUpdate` (lost a race) or :class:`StorageError`, and scrubs every message:
libpq echoes a malformed URI verbatim, password included, so nothing leaves unscrubbed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from keyguard.errors import ConcurrentUpdate, ConfigError, StorageError, StorageUnavailable

_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&\s\"']*", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)

# SQLSTATEs: unique violation, serialization failure, deadlock -> a lost race
_RACES = {"23505", "40001", "40P01"}
# lock not available (lock_timeout), query cancelled (statement_timeout) -> busy
_BUSY = {"55P03", "57014"}


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without any password: the known ones, and anything in a password position."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(r"\1***@", text)
    text = _QUERY_PASSWORD.sub(r"\1***", text)
    return _KV_PASSWORD.sub(r"\1***", text)


def _message(exc: BaseException) -> str:
    """The primary message only: a server's DETAIL line may quote row values."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc) or type(exc).__name__
    return " ".join(text.split())


@dataclass(frozen=True)
class PgTarget:
    """Connection parameters (never printed), the schema, and a printable form of the URL."""

    params: dict[str, Any] = field(repr=False)
    display: str
    schema: str | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)
    #: session settings applied to every new connection (``set_config``)
    session: dict[str, str] = field(default_factory=dict)

    def scrub(self, text: str) -> str:
        return scrub(text, self.secrets)

    def wrap(self, exc: BaseException) -> StorageError:
        """The keyguard error for a driver error (use as ``raise target.wrap(e) from e``)."""
        text = self.scrub(_message(exc))
        state = getattr(exc, "sqlstate", None) or ""
        if type(exc).__name__ == "PoolTimeout":
            return StorageUnavailable(
                f"no connection to {self.display} became available in time: {text}"
            )
        if state in _RACES:
            return ConcurrentUpdate(f"a concurrent write won the race: {text}")
        if state in _BUSY:
            return StorageUnavailable(f"database is busy (another writer holds it): {text}")
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return StorageUnavailable(f"cannot use the database {self.display}: {text}")
        return StorageError(f"database error: {text}")


def _secrets_in(url: str) -> list[str]:
    found: list[str] = []
    if "://" in url:
        try:
            parts = urlsplit(url)
            pw = parts.password
            query = parse_qsl(parts.query, keep_blank_values=True)
        except ValueError:
            pw, query = None, []
        if pw:
            found += [pw, unquote(pw)]
        found += [v for k, v in query if k.lower() == "password" and v]
    found += [m.group(2).strip("'") for m in _KV_PASSWORD.finditer(url)]
    return sorted(set(found), key=len, reverse=True)  # longest first: no partial leftovers


def _take_schema(url: str) -> tuple[str, str | None]:
    """Remove keyguard's own ``schema`` query parameter (libpq would reject it)."""
    if "://" not in url or "schema=" not in url:
        return url, None
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    rest = [(k, v) for k, v in query if k != "schema"]
    return urlunsplit(parts._replace(query=urlencode(rest))), (schemas[-1] if schemas else None)


def parse_target(
    url: str,
    *,
    schema: str | None = None,
    connect_timeout: float = 5.0,
    lock_timeout_ms: int = 5000,
) -> PgTarget:
    """Parse a PostgreSQL URL. ``schema`` (or ``?schema=`` in the URL) puts keyguard's tables in
    that schema (created if missing); otherwise they go where the ``search_path`` points."""
    secrets = tuple(_secrets_in(url))
    try:
        url, url_schema = _take_schema(url)
        params: dict[str, Any] = conninfo_to_dict(url)
    except (ValueError, psycopg.Error) as exc:
        raise ConfigError(f"invalid PostgreSQL URL: {scrub(_message(exc), secrets)}") from exc
    schema = schema if schema is not None else url_schema
    if schema is not None and not _SCHEMA.match(schema):
        raise ConfigError(
            f"invalid PostgreSQL schema name {schema!r}: use lowercase letters, digits and _"
        )
    if params.get("password"):
        secrets = tuple(sorted({*secrets, str(params["password"])}, key=len, reverse=True))
    # session settings go through set_config, not "options": libpq's PGOPTIONS still applies
    session = {"lock_timeout": f"{int(lock_timeout_ms)}ms"}
    if schema is not None:
        session["search_path"] = schema
    params.setdefault("connect_timeout", str(max(1, round(connect_timeout))))
    params.setdefault("fallback_application_name", "keyguard")
    return PgTarget(params, _display(params, schema), schema, secrets, session)


def _display(params: dict[str, Any], schema: str | None) -> str:
    user = f"{params['user']}@" if params.get("user") else ""
    host = params.get("host") or params.get("hostaddr") or ""
    port = f":{params['port']}" if params.get("port") else ""
    db = params.get("dbname", "")
    return f"postgresql://{user}{host}{port}/{db}" + (f"?schema={schema}" if schema else "")
