"""Safe key loading for applications: ``load_api_key()`` and ``openai_client()``.

This is an edge module (it reads the environment, ``.env`` files, the OS keyring and the vault);
everything it returns is a :class:`~keyguard.domain.secret.Secret` or a configured client.

Sources are tried in this order, first hit wins (``sources=`` narrows or reorders them):

1. ``env`` — the process environment (``os.environ[name]``);
2. ``dotenv`` — a ``.env`` file: ``dotenv_path`` if given, else the nearest ``.env`` found from
   the current directory upwards (read without changing ``os.environ``);
3. ``keyring`` — the OS keyring, service ``keyguard``, user ``name`` (needs ``keyguard[keyring]``);
4. ``vault`` — the keyguard vault in ``KEYGUARD_HOME``: the CURRENT version of upstream
   credential ``upstream`` (default ``default``), when the vault exists and its master key is
   available without a prompt.
"""

from __future__ import annotations

import os
import ssl
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keyguard.domain.keys import VIRTUAL_KEY_PREFIX, openai_key_kind, parse_virtual_key
from keyguard.domain.records import check_base_url
from keyguard.domain.secret import Secret
from keyguard.errors import ConfigError, KeyFormatError, KeyguardError

if TYPE_CHECKING:
    import openai

DEFAULT_SOURCES = ("env", "dotenv", "keyring", "vault")
KEYRING_SERVICE = "keyguard"
DEFAULT_BASE_URL = "https://api.openai.com/v1"


class KeyNotConfigured(ConfigError):
    """No source had the key. The message lists what to do."""


def _hint(name: str) -> str:
    return (
        f"{name} is not set. Do one of: export {name} in the environment; put {name}=... in a "
        f".env file (listed in .gitignore; `keyguard fix` moves hardcoded keys there); store it in "
        f"the OS keyring (`keyring set {KEYRING_SERVICE} {name}`); or keep it in the keyguard "
        f"vault (`keyguard upstream add default --from-env {name}`)."
    )


def _from_env(name: str, env: Mapping[str, str]) -> str | None:
    return env.get(name) or None


def _from_dotenv(name: str, dotenv_path: str | Path | None) -> str | None:
    from dotenv import dotenv_values, find_dotenv

    path = str(dotenv_path) if dotenv_path is not None else find_dotenv(usecwd=True)
    if not path or not Path(path).is_file():
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            _check_dotenv_writers(path, os.fstat(fh.fileno()).st_mode)
            values = dotenv_values(stream=fh)
    except UnicodeDecodeError as exc:  # its .object is the whole file: never chain it
        problem = f"it is not UTF-8 text (byte {exc.start})"
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
    else:
        value: str | None = values.get(name)
        return value or None
    raise ConfigError(f"cannot read the .env file {path}: {problem}")


def _check_dotenv_writers(path: str, mode: int) -> None:
    """Refuse a .env that other users can write, or plant in its directory (e.g. ``/tmp``
    above the project): the key it holds would be theirs, and so would every request."""
    if os.name != "posix":
        return
    directory = os.stat(os.path.dirname(os.path.abspath(path))).st_mode
    if mode & stat.S_IWOTH or directory & stat.S_IWOTH:
        raise ConfigError(
            f"refusing the .env file {path}: other users can write to it or to its directory. "
            "Keep it in a directory only you can write, and chmod 600 it."
        )


def _from_keyring(name: str) -> str | None:
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        return None
    try:
        value = keyring.get_password(KEYRING_SERVICE, name)
    except (KeyringError, RuntimeError):  # no usable backend on this machine
        return None
    return str(value) if value else None


def _from_vault(upstream: str, env: Mapping[str, str]) -> str | None:
    from keyguard.config import load_settings
    from keyguard.wiring import open_vault_if_present

    settings = load_settings(env=env)
    vault = open_vault_if_present(settings, env)
    if vault is None:
        return None
    try:
        _, secret = vault.upstream_secret(upstream, actor="library", source="load_api_key")
    except KeyguardError:
        return None
    finally:
        vault.close()
    return secret.reveal()


def _key_problem(value: str) -> str | None:
    """Why ``value`` is not an OpenAI key or keyguard virtual key, or ``None`` if it is one."""
    try:
        if value.startswith(VIRTUAL_KEY_PREFIX):
            parse_virtual_key(value)
        else:
            openai_key_kind(value)
    except KeyFormatError as exc:
        return str(exc)
    return None


def _malformed(origin: str, problem: str) -> KeyFormatError:
    return KeyFormatError(
        f"the key from {origin} is malformed: {problem}. Copy it again from the OpenAI dashboard "
        "(or `keyguard key create`) and check for quotes, spaces or a truncated value."
    )


def validate_key(value: str, *, origin: str) -> None:
    """Raise :class:`KeyFormatError` naming ``origin`` if ``value`` is not a usable key.

    Accepts OpenAI keys and keyguard virtual keys (for use through the gateway).
    """
    problem = _key_problem(value)
    if problem is not None:
        del value  # not in this frame's locals (a traceback with locals: Sentry, rich)
        raise _malformed(origin, problem)


def _lookup(
    source: str,
    name: str,
    env: Mapping[str, str] | None,
    dotenv_path: str | Path | None,
    upstream: str,
) -> tuple[str | None, str]:
    """The value ``source`` has for ``name`` (or ``None``) and how to name where it came from."""
    environ = os.environ if env is None else env
    if source == "env":
        return _from_env(name, environ), f"the environment variable {name}"
    if source == "dotenv":
        return _from_dotenv(name, dotenv_path), f"{name} in the .env file"
    if source == "keyring":
        return _from_keyring(name), f"{name} in the OS keyring"
    value = _from_vault(upstream, environ)
    return value, f"upstream credential {upstream!r} in the keyguard vault"


def load_api_key(
    name: str = "OPENAI_API_KEY",
    *,
    sources: Sequence[str] = DEFAULT_SOURCES,
    env: Mapping[str, str] | None = None,
    dotenv_path: str | Path | None = None,
    upstream: str = "default",
    validate: bool = True,
) -> Secret:
    """Load an API key as a :class:`Secret` from the first source that has it.

    Raises :class:`KeyNotConfigured` when no source has it and :class:`KeyFormatError` when
    the value found is not an OpenAI (or keyguard virtual) key; neither message contains the
    value.
    """
    unknown = set(sources) - set(DEFAULT_SOURCES)
    if unknown:
        raise ValueError(f"unknown key sources: {sorted(unknown)}")
    for source in sources:
        value, origin = _lookup(source, name, env, dotenv_path, upstream)
        if value is None:
            continue
        # from here on only the Secret holds the value: a traceback that records the locals of
        # its frames (Sentry, rich, pytest --showlocals) shows its redacted form, never the key
        secret = Secret(value, name=name)
        del value
        if validate:
            problem = _key_problem(secret.reveal())
            if problem is not None:
                raise _malformed(origin, problem)
        return secret
    raise KeyNotConfigured(_hint(name))


def _ssl_context(ca_bundle: str | Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx  # verify_mode=CERT_REQUIRED and check_hostname=True by default


def _trust_env(url: str) -> bool:
    """Whether httpx may take proxies from the environment (``HTTP(S)_PROXY``, ``ALL_PROXY``).

    Never for plain http (a loopback gateway): a proxy would receive the key in clear text.
    Over https a proxy only relays the TLS connection, which is still verified end to end.
    """
    return not url.lower().startswith("http://")


class _KeyProvider:
    """Re-reads the key at most every ``refresh`` seconds, so a rotated key is picked up."""

    def __init__(self, load: Callable[[], Secret], refresh: float | None) -> None:
        self._load = load
        self._refresh = refresh
        self._lock = threading.Lock()
        self._secret = load()
        self._loaded_at = time.monotonic()

    def __call__(self) -> str:
        refresh = self._refresh
        if refresh is not None and time.monotonic() - self._loaded_at >= refresh:
            with self._lock:
                if time.monotonic() - self._loaded_at >= refresh:
                    try:
                        self._secret = self._load()
                    finally:
                        self._loaded_at = time.monotonic()
        return self._secret.reveal()


def _client_kwargs(
    api_key: Secret | None,
    name: str,
    base_url: str | None,
    allow_insecure_loopback: bool,
    refresh: float,
    load_kwargs: Mapping[str, Any],
    env: Mapping[str, str] | None,
) -> tuple[_KeyProvider, str]:
    # always explicit: with ``env=`` given, openai would otherwise read os.environ unchecked
    # (and no local holds os.environ, with the key in it, for a traceback to show)
    url = base_url or (os.environ if env is None else env).get("OPENAI_BASE_URL")
    url = url or DEFAULT_BASE_URL
    check_base_url(url, allow_insecure_loopback=allow_insecure_loopback)
    if api_key is not None:
        if not isinstance(api_key, Secret):
            raise TypeError("api_key must be a keyguard.Secret (use keyguard.load_api_key())")
        static = api_key
        provider = _KeyProvider(lambda: static, None)
    else:
        provider = _KeyProvider(lambda: load_api_key(name, env=env, **load_kwargs), refresh)
    return provider, url


def openai_client(
    *,
    api_key: Secret | None = None,
    name: str = "OPENAI_API_KEY",
    base_url: str | None = None,
    allow_insecure_loopback: bool = False,
    ca_bundle: str | Path | None = None,
    refresh: float = 60.0,
    env: Mapping[str, str] | None = None,
    load_kwargs: Mapping[str, Any] | None = None,
    **client_kwargs: Any,
) -> openai.OpenAI:
    """An ``openai.OpenAI`` client configured safely.

    The key comes from ``api_key`` or :func:`load_api_key` (``name``, ``load_kwargs``) and is
    re-read every ``refresh`` seconds; TLS is verified (system trust store or ``ca_bundle``,
    TLS >= 1.2); a non-https ``base_url`` is refused unless it is a loopback gateway and
    ``allow_insecure_loopback`` is set. Other keyword arguments go to ``openai.OpenAI``.
    """
    import openai

    provider, url = _client_kwargs(
        api_key, name, base_url, allow_insecure_loopback, refresh, load_kwargs or {}, env
    )
    http_client = openai.DefaultHttpxClient(
        verify=_ssl_context(ca_bundle), follow_redirects=False, trust_env=_trust_env(url)
    )
    return openai.OpenAI(api_key=provider, base_url=url, http_client=http_client, **client_kwargs)


def async_openai_client(
    *,
    api_key: Secret | None = None,
    name: str = "OPENAI_API_KEY",
    base_url: str | None = None,
    allow_insecure_loopback: bool = False,
    ca_bundle: str | Path | None = None,
    refresh: float = 60.0,
    env: Mapping[str, str] | None = None,
    load_kwargs: Mapping[str, Any] | None = None,
    **client_kwargs: Any,
) -> openai.AsyncOpenAI:
    """The ``openai.AsyncOpenAI`` twin of :func:`openai_client`, with the same safeguards."""
    import openai

    provider, url = _client_kwargs(
        api_key, name, base_url, allow_insecure_loopback, refresh, load_kwargs or {}, env
    )

    async def key() -> str:
        return provider()

    get_key: Callable[[], Awaitable[str]] = key
    http_client = openai.DefaultAsyncHttpxClient(
        verify=_ssl_context(ca_bundle), follow_redirects=False, trust_env=_trust_env(url)
    )
    return openai.AsyncOpenAI(
        api_key=get_key, base_url=url, http_client=http_client, **client_kwargs
    )
