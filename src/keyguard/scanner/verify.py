"""``--verify``: ask the upstream whether a found key is live. Standard library only.

``GET {base}/models`` with the key as a bearer token: 200 means the key works (*active*), 401
means it is revoked or invalid; 403 and 429 also prove the key authenticated (restricted
permissions, quota), so they count as active. TLS is always verified (the system trust store
or the caller's context, TLS >= 1.2), redirects are never followed with a key, and plain
``http://`` is accepted only for loopback hosts (a local fake upstream or gateway).
"""

from __future__ import annotations

import ipaddress
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from keyguard.domain.secret import Secret
from keyguard.errors import ConfigError
from keyguard.scanner.model import Finding

DEFAULT_BASE_URL = "https://api.openai.com/v1"

ACTIVE = "active"
REVOKED = "revoked-or-invalid"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: following one would send the key to another place."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str) -> str:
    """Return the normalised base URL, or raise :class:`ConfigError` naming the problem."""
    parts = urlsplit(base_url)
    if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        raise ConfigError("verify-base-url: plain http:// is allowed only for loopback hosts")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"verify-base-url: not an http(s) URL: {base_url}")
    return base_url.rstrip("/")


class Verifier:
    """Checks keys against ``{base_url}/models``."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = check_base_url(base_url)
        self.timeout = timeout
        context = ssl_context or ssl.create_default_context()
        context.minimum_version = max(context.minimum_version, ssl.TLSVersion.TLSv1_2)
        self._opener = urllib.request.build_opener(
            _NoRedirect(), urllib.request.HTTPSHandler(context=context)
        )

    def status(self, secret: Secret) -> str:
        """``active``, ``revoked-or-invalid`` or ``unknown (…)``; never raises for HTTP."""
        # the scheme was checked in check_base_url: https, or http to loopback only
        request = urllib.request.Request(  # noqa: S310
            f"{self.base_url}/models",
            headers={"Authorization": f"Bearer {secret.reveal()}", "User-Agent": "keyguard-scan"},
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                code = response.status
        except urllib.error.HTTPError as exc:
            code = exc.code
            exc.close()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return f"unknown (unreachable: {type(reason).__name__})"
        if code in (200, 403, 429):
            return ACTIVE
        if code == 401:
            return REVOKED
        return f"unknown (HTTP {code})"

    def annotate(self, findings: Iterable[Finding]) -> list[Finding]:
        """Each finding with ``verification`` set; each distinct key is asked about once."""
        cache: dict[str, str] = {}
        out = []
        for f in findings:
            if f.detector != "openai" and "openai" not in f.format:
                out.append(f)
                continue
            if f.fingerprint not in cache:
                cache[f.fingerprint] = self.status(f.secret)
            out.append(replace(f, verification=cache[f.fingerprint]))
        return out
