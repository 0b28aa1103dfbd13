"""Key formats: OpenAI API keys and keyguard virtual keys; fingerprints and redacted forms.

OpenAI keys (as published in gitleaks' ``openai-api-key`` rule, trufflehog's OpenAI detector
and GitHub secret scanning) all start with ``sk-``, may carry a kind segment (``proj``,
``svcacct``, ``admin``), use the URL-safe base64 alphabet, and contain the marker
``T3BlbkFJ`` (base64 of "OpenAI"). Lengths have changed several times, so validation anchors
on prefix, alphabet and marker rather than on one length. The scanner's detectors
(:mod:`keyguard.scanner.detectors`) are stricter and filter placeholders and fakes.

keyguard virtual keys look like ``kg_`` + 12-character key id + 44-character secret + 6-character
checksum (base62 CRC32 of id + secret, as GitHub does for its tokens), 65 characters in all. The
checksum lets scanners recognise them and lets the gateway reject typos before any lookup.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass

from keyguard.errors import KeyFormatError

OPENAI_MARKER = "T3BlbkFJ"
OPENAI_KINDS = ("proj", "svcacct", "admin")

#: loose shape used to validate a key handed to keyguard on purpose
OPENAI_KEY_RE = re.compile(r"sk-(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_-]{20,}")

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"

VIRTUAL_KEY_PREFIX = "kg_"
KEY_ID_LENGTH = 12
VK_SECRET_LENGTH = 44  # 44 base62 characters = 262 bits
CHECKSUM_LENGTH = 6
VIRTUAL_KEY_LENGTH = len(VIRTUAL_KEY_PREFIX) + KEY_ID_LENGTH + VK_SECRET_LENGTH + CHECKSUM_LENGTH
VIRTUAL_KEY_RE = re.compile(r"kg_[0-9a-z]{12}[0-9A-Za-z]{50}")
KEY_ID_RE = re.compile(r"[0-9a-z]{12}")

#: anything that has the shape of a key keyguard knows: used by pattern-based redaction
ANY_KEY_RE = re.compile(
    r"sk-(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_-]{20,}|kg_[0-9a-z]{12}[0-9A-Za-z]{50}"
    r"|kga_[0-9a-z]{12}[0-9A-Za-z]{50}"  # admin tokens (keyguard.domain.admin_tokens)
)


def fingerprint(value: str) -> str:
    """A stable, non-reversible identifier of a secret: ``sha256:`` + 16 hex digits."""
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def redacted_form(value: str) -> str:
    """Keep only the format prefix and the last four characters: ``sk-proj-…wxyz``."""
    if value.startswith(VIRTUAL_KEY_PREFIX) and len(value) == VIRTUAL_KEY_LENGTH:
        key_id = value[len(VIRTUAL_KEY_PREFIX) : len(VIRTUAL_KEY_PREFIX) + KEY_ID_LENGTH]
        return f"{VIRTUAL_KEY_PREFIX}{key_id}…{value[-4:]}"
    if value.startswith("sk-"):
        for kind in OPENAI_KINDS:
            if value.startswith(f"sk-{kind}-"):
                prefix = f"sk-{kind}-"
                break
        else:
            prefix = "sk-"
        tail = value[-4:] if len(value) >= len(prefix) + 16 else ""
        return f"{prefix}…{tail}"
    if len(value) >= 16:
        return f"…{value[-4:]}"
    return "…"


def openai_key_kind(value: str) -> str:
    """Return ``proj``/``svcacct``/``admin``/``user`` for a valid-looking OpenAI key.

    Raises :class:`KeyFormatError` (without echoing the value) when it does not look like one.
    """
    if not OPENAI_KEY_RE.fullmatch(value) or OPENAI_MARKER not in value:
        problem = _describe_problem(value)
        raise KeyFormatError(f"not an OpenAI API key ({problem}; {redacted_form(value)})")
    for kind in OPENAI_KINDS:
        if value.startswith(f"sk-{kind}-"):
            return kind
    return "user"


def _describe_problem(value: str) -> str:
    if value != value.strip():
        return "it has leading or trailing whitespace"
    if not value.startswith("sk-"):
        return "it does not start with 'sk-'"
    if re.search(r"[^A-Za-z0-9_-]", value):
        return "it contains characters OpenAI keys never contain"
    if len(value) < 40:
        return "it is too short"
    return "it lacks the OpenAI key marker"


def _b62(number: int, width: int) -> str:
    out = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        out.append(BASE62[rem])
    return "".join(reversed(out))


def checksum(body: str) -> str:
    """Six base62 characters of CRC32 over the key id and secret."""
    return _b62(binascii.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


@dataclass(frozen=True)
class VirtualKeyParts:
    """A parsed virtual key: the public ``key_id`` and the ``secret`` part."""

    key_id: str
    secret: str = ""

    def __repr__(self) -> str:  # never show the secret part
        return f"VirtualKeyParts(key_id={self.key_id!r})"


def new_key_id() -> str:
    """A fresh random public key id (12 characters of [0-9a-z], 62 bits)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))


def generate_virtual_key(key_id: str | None = None) -> tuple[str, str]:
    """Return ``(key_id, token)`` for a new virtual key; ``key_id`` is kept on rotation."""
    kid = key_id if key_id is not None else new_key_id()
    if not KEY_ID_RE.fullmatch(kid):
        raise ValueError("key id must be 12 characters of [0-9a-z]")
    secret = "".join(secrets.choice(BASE62) for _ in range(VK_SECRET_LENGTH))
    body = kid + secret
    return kid, VIRTUAL_KEY_PREFIX + body + checksum(body)


def parse_virtual_key(token: str) -> VirtualKeyParts:
    """Split and check a virtual key; checksum first, so typos never reach a lookup.

    Raises :class:`KeyFormatError` whose message never contains the token.
    """
    if len(token) != VIRTUAL_KEY_LENGTH or not VIRTUAL_KEY_RE.fullmatch(token):
        raise KeyFormatError("malformed keyguard virtual key")
    body = token[len(VIRTUAL_KEY_PREFIX) : -CHECKSUM_LENGTH]
    if not secrets.compare_digest(checksum(body), token[-CHECKSUM_LENGTH:]):
        raise KeyFormatError("keyguard virtual key checksum mismatch (typo or truncated key?)")
    return VirtualKeyParts(key_id=body[:KEY_ID_LENGTH], secret=body[KEY_ID_LENGTH:])


def is_virtual_key(token: str) -> bool:
    """True when ``token`` is a well-formed virtual key with a valid checksum."""
    try:
        parse_virtual_key(token)
    except KeyFormatError:
        return False
    return True


def generate_openai_style_key(kind: str = "proj", rng: secrets.SystemRandom | None = None) -> str:
    """A random string in the current shape of an OpenAI key, for fakes and tests.

    ``kind`` is ``proj``, ``svcacct``, ``admin`` or ``user`` (legacy ``sk-`` + 20 + marker + 20).
    """
    r = rng or secrets.SystemRandom()
    urlsafe = BASE62 + "-_"
    if kind == "user":
        return "sk-" + "".join(r.choice(BASE62) for _ in range(20)) + OPENAI_MARKER + "".join(
            r.choice(BASE62) for _ in range(20)
        )
    if kind not in OPENAI_KINDS:
        raise ValueError(f"unknown OpenAI key kind {kind!r}")
    half = 74 if kind == "proj" else 58
    left = "".join(r.choice(urlsafe) for _ in range(half))
    right = "".join(r.choice(urlsafe) for _ in range(half))
    # real keys never start or end a half with '-'/'_' next to the marker in practice; keep alnum
    return f"sk-{kind}-{r.choice(BASE62)}{left[1:]}{OPENAI_MARKER}{right[:-1]}{r.choice(BASE62)}"
