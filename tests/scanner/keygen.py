"""Key-shaped test values, generated at run time from a seed (never committed as literals)."""

from __future__ import annotations

import base64
import hashlib
import random
import string
import uuid

from keyguard.domain.keys import BASE62, OPENAI_MARKER, checksum, generate_openai_style_key

URLSAFE = BASE62 + "-_"
MARKER = OPENAI_MARKER
KINDS = ("proj", "svcacct", "admin", "user")


def rand(rng: random.Random, n: int, alphabet: str = BASE62) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def openai_key(rng: random.Random, kind: str = "proj") -> str:
    return generate_openai_style_key(kind, rng=rng)  # type: ignore[arg-type]


def early_project_key(rng: random.Random) -> str:
    return f"sk-proj-{rand(rng, 20)}{MARKER}{rand(rng, 20)}"


def none_user_key(rng: random.Random) -> str:
    return f"sk-None-{rand(rng, 74, URLSAFE)}{MARKER}{rand(rng, 73, URLSAFE)}A"


def svcacct_long_key(rng: random.Random) -> str:
    return f"sk-svcacct-{rand(rng, 74, URLSAFE)}{MARKER}{rand(rng, 73, URLSAFE)}Z"


def future_key(rng: random.Random) -> str:
    """A plausible next format: new kind segment and lengths nobody has seen yet."""
    return f"sk-team-{rand(rng, 90, URLSAFE)}{MARKER}{rand(rng, 89, URLSAFE)}q"


def virtual_key(rng: random.Random) -> str:
    kid = rand(rng, 12, "0123456789abcdefghijklmnopqrstuvwxyz")
    body = kid + rand(rng, 44)
    return "kg_" + body + checksum(body)


def admin_token(rng: random.Random) -> str:
    """A keyguard admin-API token (``kga_``), checksum valid."""
    kid = rand(rng, 12, "0123456789abcdefghijklmnopqrstuvwxyz")
    body = kid + rand(rng, 44)
    return "kga_" + body + checksum(body)


def all_positive_keys(rng: random.Random) -> dict[str, str]:
    """format label -> key, one of every shape the scanner must find."""
    keys = {kind: openai_key(rng, kind) for kind in KINDS}
    keys["early-proj"] = early_project_key(rng)
    keys["none-user"] = none_user_key(rng)
    keys["svcacct-74"] = svcacct_long_key(rng)
    keys["future"] = future_key(rng)
    keys["virtual"] = virtual_key(rng)
    keys["admin-token"] = admin_token(rng)
    return keys


def hard_negatives(rng: random.Random) -> list[str]:
    """Strings that look like keys to a naive pattern and must not be reported."""
    bad_vk = virtual_key(rng)
    bad_vk = bad_vk[:-1] + ("A" if bad_vk[-1] != "A" else "B")
    bad_admin = admin_token(rng)
    bad_admin = bad_admin[:-1] + ("A" if bad_admin[-1] != "A" else "B")
    blob = base64.b64encode(rng.randbytes(600)).decode()
    openai_b64 = base64.b64encode(b"xyzOpenAI rocks; abcOpenAI again").decode()  # has the marker
    return [
        "sk-...",
        "sk-xxxx",
        "sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "sk-your-key-here",
        "sk-your-api-key",
        "<OPENAI_API_KEY>",
        "${OPENAI_API_KEY}",
        "sk-proj-" + "x" * 74 + MARKER + "x" * 74,
        "sk-" + "a" * 20 + MARKER + "a" * 20,
        "sk-" + "abcd" * 5 + MARKER + "1234" * 5,
        "sk-" + "abcdefghijklmnopqrst" + MARKER + "ABCDEFGHIJKLMNOPQRST",
        "sk-proj-your_api_key_goes_here_1234" + MARKER + "your_api_key_goes_here_1234",
        "sk-proj-EXAMPLEkey" + rand(rng, 20) + MARKER + rand(rng, 20),
        "sk-" + rand(rng, 20, "0123456789abcdef") + MARKER + rand(rng, 20, "0123456789abcdef"),
        "sk-abc" + MARKER + "def",
        "sk_live_" + rand(rng, 24),
        "sk_test_" + rand(rng, 24),
        "rk_live_" + rand(rng, 24),
        "sk-ant-api03-" + rand(rng, 93, URLSAFE) + "AA",
        "sk-ant-admin01-" + rand(rng, 93, URLSAFE) + "AA",
        "sk-" + rand(rng, 32, "0123456789abcdef"),
        "sk-" + rand(rng, 48),
        "sk-or-v1-" + rand(rng, 64, "0123456789abcdef"),
        hashlib.sha256(rng.randbytes(8)).hexdigest(),
        hashlib.sha1(rng.randbytes(8)).hexdigest(),
        hashlib.md5(rng.randbytes(8)).hexdigest(),
        str(uuid.UUID(int=rng.getrandbits(128))),
        blob,
        openai_b64,
        "eyJhbGciOiJIUzI1NiJ9." + rand(rng, 40, URLSAFE) + "." + rand(rng, 43, URLSAFE),
        bad_vk,
        bad_admin,
        "kga_" + rand(rng, 30),
        "kg_" + rand(rng, 20),
        "pkg_resources.require('x')",
        "task-" + rand(rng, 30) + "-mask-" + rand(rng, 30),
    ]


def minified_js(rng: random.Random, size: int = 200_000) -> str:
    """One long line of minified-looking code: identifiers, dashes, sk-ish fragments."""
    parts = []
    total = 0
    words = ["task", "desk", "risk", "mask", "ask", "sk", "kg", "OpenAI"]
    letters = string.ascii_letters
    while total < size:
        tail = "".join(rng.choices(letters, k=rng.randint(1, 12)))
        ident = rng.choice(words) + rng.choice(["-", "_", ""]) + tail
        parts.append(ident + rng.choice(";,(){}=+."))
        total += len(parts[-1])
    return "".join(parts)
