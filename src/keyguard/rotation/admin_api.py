"""The OpenAI Admin API client: service accounts and project API keys, over verified TLS.

The one seam to the Admin API (stdlib :mod:`http.client`): every transport failure becomes an
:class:`~keyguard.errors.UpstreamError` (:class:`UpstreamTimeout`, :class:`UpstreamUnavailable`,
or :class:`AdminApiError` carrying OpenAI's status and error code). Redirects are never
followed. Keys travel only in the ``Authorization`` header; error messages are passed through
:func:`~keyguard.domain.redaction.redact` and never quote a key.

Endpoints (base ``https://api.openai.com/v1``)::

    POST   /organization/projects/{project}/service_accounts          {"name"} -> id + api_key
    DELETE /organization/projects/{project}/service_accounts/{id}
    GET    /organization/projects/{project}/service_accounts?limit=&after=
    GET    /organization/projects/{project}/api_keys?limit=&after=
    GET    /models   (the cheap authenticated call that tests a project key)
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from keyguard.domain.records import check_base_url
from keyguard.domain.redaction import redact
from keyguard.domain.secret import Secret
from keyguard.errors import KeyFormatError, UpstreamTimeout, UpstreamUnavailable

_PAGE = 100


class AdminApiError(UpstreamUnavailable):
    """The API answered with an error status (``status``, OpenAI's ``code``)."""

    def __init__(self, message: str, *, status: int, code: str | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = code


def tls_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """A verifying client context (TLS >= 1.2), trusting ``ca_bundle`` instead of the system
    store when given."""
    ctx = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(int(value), tz=timezone.utc)


@dataclass(frozen=True)
class ServiceAccount:
    """A project service account as the API lists it."""

    id: str
    name: str
    role: str = "member"
    created_at: datetime | None = None


@dataclass(frozen=True)
class NewServiceAccount:
    """A just-created service account and its key (the only time the API returns the value)."""

    account: ServiceAccount
    api_key_id: str
    api_key: Secret = field(repr=False)


@dataclass(frozen=True)
class ProjectKey:
    """A project API key as the API lists it (redacted value only)."""

    id: str
    name: str
    redacted_value: str
    created_at: datetime | None
    last_used_at: datetime | None
    owner_type: str
    owner_id: str | None


class Endpoint:
    """A pinned base URL with a TLS context; sends one JSON request per call."""

    def __init__(
        self,
        base_url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 15.0,
        allow_insecure_loopback: bool = False,
    ) -> None:
        base_url = check_base_url(base_url, allow_insecure_loopback=allow_insecure_loopback)
        parts = urlsplit(base_url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self._ssl = ssl_context if ssl_context is not None else tls_context()
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"Endpoint({self.scheme}://{self.host}:{self.port}{self.base_path})"

    def call(
        self, method: str, path: str, key: Secret, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """Send one request; returns ``(status, parsed JSON or None)``; transport errors raise."""
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self._timeout, context=self._ssl
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self._timeout)
        data = json.dumps(body).encode() if body is not None else None
        value = key.reveal()
        if not value.isascii() or any(ch < " " or ch == "\x7f" for ch in value):
            # http.client would refuse it with a ValueError quoting the whole header
            raise KeyFormatError(
                "the key holds a line break, a control or a non-ASCII character (a trailing"
                " newline?): it cannot be sent"
            )
        headers = {"Authorization": f"Bearer {value}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, self.base_path + path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
        except TimeoutError:
            raise UpstreamTimeout(f"{self.host}: the API did not answer in time") from None
        except ssl.SSLError as exc:
            raise UpstreamUnavailable(f"{self.host}: TLS failed ({exc.reason})") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise UpstreamUnavailable(f"{self.host}: {type(exc).__name__}") from None
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return status, parsed

    def expect(
        self, method: str, path: str, key: Secret, body: dict[str, Any] | None = None
    ) -> Any:
        """Like :meth:`call`, raising :class:`AdminApiError` unless the status is 2xx."""
        status, parsed = self.call(method, path, key, body)
        if not 200 <= status < 300:
            raise _error(status, parsed, f"{method} {path.split('?', 1)[0]}")
        return parsed


def _error(status: int, parsed: Any, what: str) -> AdminApiError:
    message, code = "", None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        message = str(parsed["error"].get("message") or "")
        code = parsed["error"].get("code")
    text = redact(f"{what}: HTTP {status}" + (f": {message[:300]}" if message else ""))
    return AdminApiError(text, status=status, code=code if isinstance(code, str) else None)


def check_key(endpoint: Endpoint, key: Secret) -> None:
    """The cheap authenticated call: ``GET /models`` with ``key``; raises unless it works."""
    endpoint.expect("GET", "/models", key)


class AdminApi:
    """Service accounts of one project, acting with an admin key."""

    def __init__(self, endpoint: Endpoint, admin_key: Secret, project_id: str) -> None:
        self._ep = endpoint
        self._key = admin_key
        self._project = project_id
        self._root = f"/organization/projects/{quote(project_id, safe='')}"

    def __repr__(self) -> str:
        return f"AdminApi({self._ep!r}, project={self._project!r})"

    @property
    def project_id(self) -> str:
        return self._project

    def create_service_account(self, name: str) -> NewServiceAccount:
        doc = self._ep.expect("POST", f"{self._root}/service_accounts", self._key, {"name": name})
        try:
            key = doc["api_key"]
            account = ServiceAccount(
                doc["id"],
                doc.get("name", name),
                doc.get("role", "member"),
                _time(doc.get("created_at")),
            )
            return NewServiceAccount(account, key["id"], Secret(key["value"], name=f"sa {name}"))
        except (KeyError, TypeError):
            raise UpstreamUnavailable("the Admin API answered without a key") from None

    def delete_service_account(self, account_id: str) -> bool:
        """Delete an account and its keys; ``False`` when it was already gone (404)."""
        path = f"{self._root}/service_accounts/{quote(account_id, safe='')}"
        status, parsed = self._ep.call("DELETE", path, self._key)
        if status == 404:
            return False
        if not 200 <= status < 300:
            raise _error(status, parsed, "DELETE service account")
        return True

    def _pages(self, what: str) -> Iterator[dict[str, Any]]:
        after: str | None = None
        for _ in range(1000):
            query = {"limit": _PAGE, **({"after": after} if after else {})}
            doc = self._ep.expect("GET", f"{self._root}/{what}?{urlencode(query)}", self._key)
            data = doc.get("data", []) if isinstance(doc, dict) else []
            yield from data
            if not doc.get("has_more") or not data:
                return
            after = doc.get("last_id") or data[-1].get("id")

    def list_service_accounts(self) -> list[ServiceAccount]:
        return [
            ServiceAccount(
                d["id"], d.get("name", ""), d.get("role", ""), _time(d.get("created_at"))
            )
            for d in self._pages("service_accounts")
        ]

    def list_api_keys(self) -> list[ProjectKey]:
        out = []
        for d in self._pages("api_keys"):
            owner = d.get("owner") or {}
            kind = owner.get("type", "")
            found = owner.get(kind)
            holder: dict[str, Any] = found if isinstance(found, dict) else {}
            out.append(
                ProjectKey(
                    d["id"],
                    d.get("name", ""),
                    d.get("redacted_value", ""),
                    _time(d.get("created_at")),
                    _time(d.get("last_used_at")),
                    kind,
                    holder.get("id"),
                )
            )
        return out
