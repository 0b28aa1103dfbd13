"""The edge's wire ports (native/edge/src/{errors,headers,scrub,sniff,usage}.rs) against the
Python functions they port, through the ``probe_wire`` binary (one process per module).

Every test feeds the same input to both and asserts the same answer; the only differences
allowed are the edge's deliberate ones (docs/edge.md, the module docs of the Rust files):

* ``sniff_json`` reports NotJson where Python reads NaN/Infinity, nesting deeper than 512, or a
  ``model`` holding a lone surrogate (the edge then hands the body to the core, which decides);
* a compressed JSON answer's usage: the edge decompresses at most 64 MiB of it (Python has no
  bound);
* a usage object is re-serialised: integers beyond 64 bits clamped, non-finite floats null,
  lone surrogates U+FFFD (``normalised``), so ``usage_from_response`` reads the same counts.

Key-shaped values are built at run time (never literals in the source).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import secrets
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fakes.edgebin import Probe
from keyguard.domain import redaction
from keyguard.domain.keys import BASE62, OPENAI_MARKER, generate_virtual_key, redacted_form
from keyguard.domain.pricing import TokenUsage, usage_from_response
from keyguard.gateway import usage as usage_module
from keyguard.gateway.bodysniff import AmbiguousModel, parse_json_model
from keyguard.gateway.errors import error_body
from keyguard.gateway.headers import readable_encodings, request_head, response_headers
from keyguard.gateway.upstream_errors import MAX_ERROR_BODY, scrub_error_body, scrub_text
from keyguard.gateway.usage import UsageTap

MAX_JSON = 4 * 1024 * 1024
TAIL = 64 * 1024
MAX_DEPTH = 512
U64_MAX = 2**64 - 1
I64_MIN = -(2**63)

FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SLOW = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- the probe ----------------------------------------------------------------------------------


@pytest.fixture
def probe(probe_of: Callable[[str], Probe]) -> Probe:
    return probe_of("probe_wire")


def random_chars(n: int) -> str:
    return "".join(secrets.choice(URLSAFE) for _ in range(n))


def latin1(data: bytes) -> str:
    return data.decode("latin-1")


@contextlib.contextmanager
def registered(known: Sequence[str]) -> Iterator[None]:
    """The redaction registry holding exactly ``known`` (as the edge is given them)."""
    saved_values, saved_pattern = set(redaction._values), redaction._pattern
    redaction._values.clear()
    redaction._pattern = None
    try:
        for value in known:
            redaction.register(value)
        yield
    finally:
        redaction._values.clear()
        redaction._values.update(saved_values)
        redaction._pattern = saved_pattern


# -- key-shaped text ----------------------------------------------------------------------------

URLSAFE = BASE62 + "-_"
KEY_ID = "0123456789abcdefghijklmnopqrstuvwxyz"
SEPARATORS = st.sampled_from(
    [
        " ",
        "",
        ".",
        ": ",
        '"',
        "\n",
        "*",
        "****",
        "\u2026",
        "-",
        "_",
        "\u00e9",
        "\u2028",
        "\U0001f600",
    ]
)


@st.composite
def openai_keys(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["", "proj-", "svcacct-", "admin-"]))
    left = draw(st.text(URLSAFE, max_size=40))
    right = draw(st.text(URLSAFE, max_size=40))
    return "sk-" + kind + left + OPENAI_MARKER + right


@st.composite
def key_shapes(draw: st.DrawFn) -> str:
    """Keys and near-keys: OpenAI shapes (also too short), virtual keys and admin tokens (also
    one character off), OpenAI's masked form, redact()'s redacted form."""
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(openai_keys())
    if choice == 1:
        kind = draw(st.sampled_from(["", "proj-", "admin-"]))
        return "sk-" + kind + draw(st.text(URLSAFE, min_size=17, max_size=23))
    if choice == 2:
        prefix = draw(st.sampled_from(["kg_", "kga_", "kg", "kga_kg_"]))
        key_id = draw(st.text(KEY_ID, min_size=11, max_size=13))
        return prefix + key_id + draw(st.text(BASE62, min_size=49, max_size=51))
    key = draw(openai_keys())
    if choice == 3:  # OpenAI quotes keys masked, e.g. sk-abc12*****...*****WXYZ
        head = key[: draw(st.integers(0, 45))]
        stars = "*" * draw(st.integers(0, 45))
        middle = draw(st.sampled_from(["", "\u2026", "*****\u2026"]))
        return head + stars + middle + "*" * draw(st.integers(0, 6)) + key[-4:]
    if choice == 4:
        return redacted_form(key)
    return redacted_form(draw(st.text(URLSAFE, max_size=30)))


@st.composite
def texts_with_known(draw: st.DrawFn) -> tuple[str, list[str]]:
    """``(text, known secrets)``: the text quotes key shapes and some of the known values."""
    known = draw(
        st.lists(
            st.one_of(
                st.text(max_size=12), openai_keys(), st.text(URLSAFE, min_size=6, max_size=20)
            ),
            max_size=4,
        )
    )
    nested = draw(st.booleans())
    if known and nested:  # a known value that contains another one
        known.append(known[0][: draw(st.integers(0, len(known[0])))])
    pieces = [st.text(max_size=12), key_shapes(), SEPARATORS]
    if known:
        pieces.append(st.sampled_from(known))
    text = "".join(draw(st.lists(st.one_of(*pieces), max_size=8)))
    return text, known


messages = st.lists(st.one_of(st.text(max_size=12), key_shapes(), SEPARATORS), max_size=8).map(
    "".join
)


# -- errors.rs ----------------------------------------------------------------------------------


@FAST
@given(st.one_of(key_shapes(), st.text(max_size=70)))
def test_redacted_form(probe: Probe, value: str) -> None:
    assert probe.call("redacted_form", value) == redacted_form(value)


@FAST
@given(st.integers(100, 599), messages, st.one_of(st.none(), st.text(max_size=10)))
def test_error_body(probe: Probe, status: int, message: str, code: str | None) -> None:
    with registered([]):
        expected = error_body(status, message, code)
    assert probe.call("error_body", status, message, code).encode("latin-1") == expected


@FAST
@given(st.integers(400, 599), texts_with_known())
def test_error_body_known(probe: Probe, status: int, text_known: tuple[str, list[str]]) -> None:
    text, known = text_known
    with registered(known):
        expected = error_body(status, text, "c")
    assert probe.call("error_body", status, text, "c", known).encode("latin-1") == expected


def test_error_body_examples(probe: Probe) -> None:
    _, virtual_key = generate_virtual_key()
    body = probe.call("error_body", 401, f"bad key: {virtual_key}\n\u00e9\U0001f600", None)
    with registered([]):
        assert body.encode("latin-1") == error_body(
            401, f"bad key: {virtual_key}\n\u00e9\U0001f600", None
        )
    assert virtual_key not in body
    assert json.loads(body)["error"] == {
        "message": f"bad key: {redacted_form(virtual_key)}\n\u00e9\U0001f600",
        "type": "invalid_request_error",
        "code": None,
        "param": None,
    }
    assert "\\u00e9\\ud83d\\ude00" in body
    assert json.loads(probe.call("error_body", 503, "x", "c"))["error"]["type"] == "server_error"


# -- scrub.rs -----------------------------------------------------------------------------------


@FAST
@given(texts_with_known())
def test_scrub_text_and_redact(probe: Probe, text_known: tuple[str, list[str]]) -> None:
    text, known = text_known
    with registered(known):
        assert probe.call("redact", text, known) == redaction.redact(text)
        assert probe.call("scrub_text", text, known) == scrub_text(text)


ENCODINGS = [b"identity", b"IDENTITY", b" identity\x0b", b"", b"gzip", b"x-gzip", b"deflate", b"br"]
ERROR_HEADER_NAMES = [
    "content-type",
    "content-encoding",
    "content-length",
    "x-request-id",
    "openai-organization",
    "retry-after",
]


@st.composite
def error_responses(
    draw: st.DrawFn,
) -> tuple[int, list[tuple[str, bytes]], bytes | None, list[str]]:
    text, known = draw(texts_with_known())
    headers: list[tuple[str, bytes]] = []
    for name in draw(st.lists(st.sampled_from(ERROR_HEADER_NAMES), max_size=5)):
        if name == "content-encoding":
            value = draw(st.sampled_from(ENCODINGS))
        else:
            value = draw(st.binary(max_size=12))
        headers.append((name, value))
    form = draw(st.integers(0, 6))
    body: bytes | None
    if form >= 5:  # compressed (gzip or zlib), maybe cut short or followed by bytes
        plain = json.dumps({"error": {"message": text}}).encode()
        packed = gzip.compress(plain) if form == 5 else zlib.compress(plain)
        n = len(packed)
        cut = draw(st.sampled_from([n, n, n - 1, n - 5, 12, 3]))
        body = packed[: max(cut, 0)] + draw(st.sampled_from([b"", b"", b"xyz"]))
        if draw(st.booleans()):
            headers.append(("content-encoding", draw(st.sampled_from(ENCODINGS))))
    elif form == 0:
        body = None
    elif form == 1:
        body = json.dumps({"error": {"message": text, "code": None}}).encode()
    elif form == 2:  # raw bytes: invalid UTF-8 among the text
        raw = text.encode("utf-8")
        cut = draw(st.integers(0, len(raw)))
        body = raw[:cut] + draw(st.binary(max_size=4)) + raw[cut:]
    elif form == 3:
        body = text.encode("utf-16")
    else:
        body = json.dumps({"error": {"message": text}}, ensure_ascii=False).encode()
    return draw(st.integers(400, 599)), headers, body, known


def python_scrub(
    status: int, headers: list[tuple[str, bytes]], body: bytes | None
) -> tuple[list[list[str]], str]:
    """Python's answer, as the edge must give it."""
    encoded = [(k.encode(), v) for k, v in headers]
    out, cleaned = scrub_error_body(status, encoded, body)
    return [[k.decode(), latin1(v)] for k, v in out], latin1(cleaned)


def rust_scrub(
    probe: Probe,
    status: int,
    headers: list[tuple[str, bytes]],
    body: bytes | None,
    known: list[str],
) -> tuple[list[list[str]], str]:
    wire_headers = [[k, latin1(v)] for k, v in headers]
    body_arg = None if body is None else latin1(body)
    out, cleaned = probe.call("scrub_error_body", status, wire_headers, body_arg, known)
    return out, cleaned


@FAST
@given(error_responses())
# a gzip body whose CRC is wrong: the inflater read ahead into the trailer (found by CI)
@example(
    (
        400,
        [("content-encoding", b"gzip")],
        b"\x1f\x8b\x08\x00\x94\xa2\tk\x02\xff\xabVJ-*\xca/R\xb2R\xa8V\xcaM-.NLO\x05\xb2"
        b"\x95\x94jk\x01\x8c\xa98xyz",
        [],
    )
)
def test_scrub_error_body(
    probe: Probe, response: tuple[int, list[tuple[str, bytes]], bytes | None, list[str]]
) -> None:
    status, headers, body, known = response
    with registered(known):
        expected = python_scrub(status, headers, body)
    assert rust_scrub(probe, status, headers, body, known) == expected


def test_scrub_error_body_examples(probe: Probe) -> None:
    key = "sk-proj-" + random_chars(40) + OPENAI_MARKER + random_chars(39) + "Z"
    masked = key[:8] + "*" * 39 + key[-4:]
    message = f"Incorrect API key provided: {masked}. Also {key} and {redacted_form(key)}."
    body = json.dumps({"error": {"message": message}}, ensure_ascii=False).encode()
    headers = [("content-type", b"application/json"), ("content-length", b"%d" % len(body))]
    with registered([key]):
        expected = python_scrub(401, headers, body)
        out, cleaned = rust_scrub(probe, 401, headers, body, [key])
    assert (out, cleaned) == expected
    assert out == [["content-type", "application/json"]]
    assert json.loads(cleaned)["error"]["message"] == (
        "Incorrect API key provided: [redacted key]. Also [redacted key] and [redacted key]."
    )
    assert key[-4:] not in cleaned and key[8:20] not in cleaned

    # the size bound: MAX_ERROR_BODY is cleaned, one byte more is the generic error
    for size in (MAX_ERROR_BODY, MAX_ERROR_BODY + 1):
        big = (b"ab " * size)[:size]  # spaces: Python's _REDACTED is quadratic on one long run
        with registered([]):
            assert rust_scrub(probe, 400, [], big, []) == python_scrub(400, [], big)
    _, cleaned = rust_scrub(probe, 400, [], b"x" * (MAX_ERROR_BODY + 1), [])  # Rust only
    assert json.loads(cleaned)["error"]["code"] == "upstream_error"

    # gzip and deflate: decoded, cleaned, sent uncompressed
    for coding, packed in ((b"gzip", gzip.compress(body)), (b"deflate", zlib.compress(body))):
        enc_headers = [("content-encoding", coding), ("content-type", b"application/json")]
        with registered([key]):
            expected = python_scrub(401, enc_headers, packed)
            out, cleaned = rust_scrub(probe, 401, enc_headers, packed, [key])
        assert (out, cleaned) == expected
        assert out == [["content-type", "application/json"]]
        assert json.loads(cleaned)["error"]["message"].startswith(
            "Incorrect API key provided: [redacted key]."
        )
    # more than MAX_ERROR_BODY once decompressed: the generic error
    bomb = gzip.compress(b" " * (MAX_ERROR_BODY + 1))
    with registered([]):
        expected = python_scrub(400, [("content-encoding", b"gzip")], bomb)
        assert rust_scrub(probe, 400, [("content-encoding", b"gzip")], bomb, []) == expected
    assert json.loads(expected[1])["error"]["code"] == "upstream_error"


# -- headers.rs ---------------------------------------------------------------------------------

HEADER_NAMES = [
    "authorization",
    "api-key",
    "openai-organization",
    "openai-project",
    "host",
    "content-length",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "keyguard-edge-peer",
    "keyguard-edge-admitted",
    "accept-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-type",
    "content-encoding",
    "openai-beta",
    "openai-processing-ms",
    "x-request-id",
    "x-custom",
    "user-agent",
]
header_names = st.one_of(
    st.sampled_from(HEADER_NAMES), st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True)
)
header_values = st.binary(max_size=16).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@st.composite
def connection_values(draw: st.DrawFn) -> bytes:
    """``Connection`` naming headers, in any case, with Python's whitespace around them."""
    tokens = []
    for name in draw(st.lists(header_names, max_size=4)):
        pad = draw(st.sampled_from(["", " ", "\t", "\x0b", "\x0c", "  "]))
        tokens.append(pad + (name.upper() if draw(st.booleans()) else name) + pad)
    if draw(st.booleans()):
        tokens.append(draw(st.sampled_from(["", " ", "close", "Keep-Alive"])))
    return ",".join(tokens).encode()


@st.composite
def header_lists(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    out = []
    for name in draw(st.lists(header_names, max_size=10)):
        value = draw(connection_values()) if name == "connection" else draw(header_values)
        out.append((name, value))
    return out


HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nhost: upstream.test\r\n"


@FAST
@given(header_lists())
def test_upstream_request_headers(probe: Probe, headers: list[tuple[str, bytes]]) -> None:
    rust = probe.call("upstream_request_headers", [[k, latin1(v)] for k, v in headers])
    python_in = [(k.encode(), v) for k, v in headers]
    expected = request_head("POST", b"/v1/chat/completions", b"upstream.test", python_in, b"", b"")
    lines = b"".join(k.encode() + b": " + v.encode("latin-1") + b"\r\n" for k, v in rust)
    assert HEAD + lines + b"\r\n" == expected
    assert not {k for k, _ in rust} & {"authorization", "api-key", "host"}


CODINGS = ["gzip", "GZip", "x-gzip", "deflate", "identity", "br", "zstd", "*", "compress", ""]


@st.composite
def accept_encodings(draw: st.DrawFn) -> bytes:
    parts = []
    for coding in draw(st.lists(st.sampled_from(CODINGS), max_size=6)):
        pad = draw(st.sampled_from(["", " ", "\t", "\x0b", "  "]))
        q = draw(st.sampled_from(["", ";q=0.5", " ; q=1", ";"]))
        parts.append(pad + coding + q + pad)
    return ",".join(parts).encode()


@FAST
@given(st.one_of(accept_encodings(), header_values))
def test_readable_encodings(probe: Probe, value: bytes) -> None:
    assert probe.call("readable_encodings", latin1(value)) == latin1(readable_encodings(value))


@FAST
@given(header_lists())
def test_client_response_headers(probe: Probe, headers: list[tuple[str, bytes]]) -> None:
    rust = probe.call("client_response_headers", [[k, latin1(v)] for k, v in headers])
    expected = response_headers([(k.encode(), v) for k, v in headers])
    assert [(k.encode(), v.encode("latin-1")) for k, v in rust] == expected


def test_headers_examples(probe: Probe) -> None:
    headers = [
        ["authorization", "Bearer x"],
        ["connection", "keep-alive, X-Drop"],
        ["x-drop", "1"],
        ["accept-encoding", "gzip, br"],
        ["keyguard-edge-peer", "10.0.0.1"],
        ["content-type", "application/json"],
        ["openai-organization", "org"],
    ]
    assert probe.call("upstream_request_headers", headers) == [
        ["accept-encoding", "gzip"],
        ["content-type", "application/json"],
    ]
    assert probe.call("client_response_headers", headers) == [
        ["authorization", "Bearer x"],
        ["accept-encoding", "gzip, br"],
        ["keyguard-edge-peer", "10.0.0.1"],
        ["content-type", "application/json"],
    ]


# -- sniff.rs -----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
MODEL_KEYS = [
    '"model"',
    '"model"',
    '"\\u006dodel"',
    '"mod\\u0065l"',
    '"\\u006D\\u006F\\u0064\\u0065\\u006C"',
    '"Model"',
    '"model "',
    '"\\u006dodel\\u0000"',
]
MODEL_VALUES = st.one_of(
    st.builds(json.dumps, st.text(max_size=10), ensure_ascii=st.booleans()),
    st.sampled_from(
        [
            '"gpt-4o-mini"',
            "null",
            "1",
            "true",
            "[]",
            '{"model": "x"}',
            '"\\ud800"',
            '"a\\ud83d\\ude00b"',
            '"\\udc00\\ud83d"',
            '"\\u0067pt"',
        ]
    ),
)
STREAM_KEYS = ['"stream"', '"\\u0073tream"', '"Stream"']
STREAM_VALUES = st.sampled_from(["true", "false", "1", "null", '"true"', "[true]"])
WHITESPACE = st.sampled_from(["", " ", "\n", "\t", "\r\n  "])


def raw_objects(depth: int = 0) -> st.SearchStrategy[str]:
    """JSON object text built by hand: ``model`` keys spelled with escapes, repeated, nested."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        members = []
        for _ in range(draw(st.integers(0, 5))):
            kind = draw(st.sampled_from(["model", "model", "stream", "other", "nested"]))
            if kind == "model":
                key, value = draw(st.sampled_from(MODEL_KEYS)), draw(MODEL_VALUES)
            elif kind == "stream":
                key, value = draw(st.sampled_from(STREAM_KEYS)), draw(STREAM_VALUES)
            elif kind == "nested" and depth < 2:
                key = json.dumps(draw(st.text(max_size=4)))
                inner = draw(raw_objects(depth + 1))
                value = inner if draw(st.booleans()) else f"[{inner}, 1]"
            else:
                key = json.dumps(draw(st.text(max_size=6)), ensure_ascii=draw(st.booleans()))
                value = json.dumps(draw(json_values), ensure_ascii=draw(st.booleans()))
            ws = draw(WHITESPACE)
            members.append(f"{key}{ws}:{ws}{value}")
        return "{" + draw(WHITESPACE) + ("," + draw(WHITESPACE)).join(members) + "}"

    return build()


CONSTANTS = ["NaN", "Infinity", "-Infinity"]


@st.composite
def request_bodies(draw: st.DrawFn) -> bytes:
    text = draw(
        st.one_of(
            raw_objects(),
            raw_objects(),
            st.builds(json.dumps, json_values),
            st.builds(
                json.dumps,
                st.fixed_dictionaries(
                    {"model": st.text(max_size=10), "messages": json_values},
                    optional={"stream": st.booleans()},
                ),
                indent=st.sampled_from([None, 2]),
            ),
        )
    )
    body = text.encode("utf-8")
    mutation = draw(st.integers(0, 14))
    is_object = text.endswith("}")
    if mutation == 1:
        return b"\xef\xbb\xbf" + body
    if mutation == 2:
        return text.encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32"])))
    if mutation == 3:  # invalid UTF-8 (incl. an encoded surrogate) somewhere
        cut = draw(st.integers(0, len(body)))
        bad = draw(st.sampled_from([b"\x80", b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf0\x9f"]))
        return body[:cut] + bad + body[cut:]
    if mutation == 4:
        return body[: draw(st.integers(0, len(body)))]
    if mutation == 5:
        return body + draw(st.sampled_from([b" x", b",", b"}", b"{}", b" \x0b", b"\x00", b" \n"]))
    if mutation == 6:
        constant = draw(st.sampled_from(CONSTANTS))
        if is_object and len(text) > 2:
            return (text[:-1] + f', "n": {constant}}}').encode()
        return f"[{text}, {constant}]".encode()
    if mutation == 7:  # deep nesting around, or inside, the object
        n = draw(st.sampled_from([100, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 700, 3000]))
        if is_object and draw(st.booleans()):
            return (
                text[:-1] + (', "d": ' if len(text) > 2 else '"d": ') + "[" * n + "]" * n + "}"
            ).encode()
        return ("[" * n + text + "]" * n).encode()
    if mutation == 8:  # Python's int() refuses more than 4300 digits
        digits = "7" * draw(st.sampled_from([4300, 4301]))
        if is_object and len(text) > 2:
            return (text[:-1] + f', "n": -{digits}}}').encode()
        return f"[{digits}, {text}]".encode()
    if mutation == 9:
        return b" \t\r\n" + body + b"\r\n "
    if mutation == 10:  # a raw control character inside a string
        return body.replace(b'"', b'"\x01', 1)
    return body


def python_sniff(body: bytes) -> dict[str, Any]:
    try:
        parsed, model, data = parse_json_model(body)
    except AmbiguousModel:
        return {"kind": "ambiguous"}
    if not parsed:
        return {"kind": "not_json"}
    if data is None:
        return {"kind": "not_object"}
    return {"kind": "object", "model": model, "stream": data.get("stream") is True}


def max_depth(text: str) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


class _Constant(Exception):
    pass


def _refuse_constant(name: str) -> Any:
    raise _Constant(name)


def edge_may_refuse(body: bytes, python: dict[str, Any]) -> bool:
    """Python reads what the edge refuses on purpose (NaN/Infinity, nesting deeper than
    MAX_DEPTH, a lone surrogate in ``model``): the edge may say NotJson (the core decides)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    model = python.get("model") or ""
    if any(0xD800 <= ord(c) <= 0xDFFF for c in model):
        return True
    if max_depth(text) > MAX_DEPTH:
        return True
    try:
        json.loads(text, parse_constant=_refuse_constant)
    except _Constant:
        return True
    except (ValueError, RecursionError):
        pass
    return False


def check_sniff(probe: Probe, body: bytes) -> dict[str, Any]:
    rust: dict[str, Any] = probe.call("sniff_json", latin1(body))
    python = python_sniff(body)
    if rust != python:
        assert rust == {"kind": "not_json"}, (body[:200], rust, python)
        assert edge_may_refuse(body, python), (body[:200], rust, python)
    return rust


@FAST
@given(request_bodies())
def test_sniff_json(probe: Probe, body: bytes) -> None:
    check_sniff(probe, body)


SNIFF_EXAMPLES: list[tuple[bytes, dict[str, Any]]] = [
    (b'{"model": "gpt-4o", "stream": true}', {"kind": "object", "model": "gpt-4o", "stream": True}),
    (b'{"model": null, "stream": 1}', {"kind": "object", "model": None, "stream": False}),
    (
        b'{"stream": true, "\\u0073tream": false}',
        {"kind": "object", "model": None, "stream": False},
    ),
    (
        b'{"m": 1, "\\u006dodel": "x\\u00e9"}',
        {"kind": "object", "model": "x\u00e9", "stream": False},
    ),
    (b'{"x": {"model": 1}, "model": "m"}', {"kind": "object", "model": "m", "stream": False}),
    (b'{"model": "a", "model": "a"}', {"kind": "ambiguous"}),
    (b'{"model": "a", "mod\\u0065l": "b"}', {"kind": "ambiguous"}),
    (b'[{"model": 1, "\\u006dodel": 2}]', {"kind": "ambiguous"}),
    (b'{"model": 1, "model": 2} trailing', {"kind": "ambiguous"}),
    (b'{"model": 1, "model": 2, oops}', {"kind": "not_json"}),
    (b'{"model": 4}', {"kind": "ambiguous"}),
    (b'{"model": ["gpt-4o"]}', {"kind": "ambiguous"}),
    (b'{"model": 4} x', {"kind": "not_json"}),
    (b"[1, 2]", {"kind": "not_object"}),
    (b'"\\ud800"', {"kind": "not_object"}),
    (b"", {"kind": "not_json"}),
    (b'\xef\xbb\xbf{"model": "a"}', {"kind": "not_json"}),
    ('{"model": "a"}'.encode("utf-16"), {"kind": "not_json"}),
    (b'{"model": "\xff"}', {"kind": "not_json"}),
    (b'{"model": "a",}', {"kind": "not_json"}),
    (b'{"n": 1' + b"0" * 4300 + b"}", {"kind": "not_json"}),
    (b'{"n": 1' + b"0" * 4299 + b"}", {"kind": "object", "model": None, "stream": False}),
    (b"[" * 5000 + b"]" * 5000, {"kind": "not_json"}),
]


@pytest.mark.parametrize(("body", "expected"), SNIFF_EXAMPLES)
def test_sniff_examples(probe: Probe, body: bytes, expected: dict[str, Any]) -> None:
    assert python_sniff(body) == expected
    assert probe.call("sniff_json", latin1(body)) == expected


def test_sniff_deliberately_stricter(probe: Probe) -> None:
    """What Python reads and the edge hands to the core (NotJson) instead."""
    for body in [
        b'{"model": "gpt-4o", "temperature": NaN}',
        b'{"model": "gpt-4o", "x": [-Infinity]}',
        b'{"model": "gpt\\ud800"}',
        b'{"model": "m", "d": ' + b"[" * 600 + b"]" * 600 + b"}",
    ]:
        assert python_sniff(body)["kind"] == "object"
        assert probe.call("sniff_json", latin1(body)) == {"kind": "not_json"}
        assert edge_may_refuse(body, python_sniff(body))


# -- usage.rs -----------------------------------------------------------------------------------

USAGE_KEYS = [
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "prompt_tokens_details",
    "input_tokens_details",
    "x",
]
counts = st.one_of(
    st.integers(-5, 10**6),
    st.integers(2**63 - 2, 2**70),
    st.integers(-(2**70), -(2**63) + 2),
    st.floats(),
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.dictionaries(st.just("cached_tokens"), st.integers(-1, 100), max_size=1),
)
usage_values = st.one_of(
    st.dictionaries(st.sampled_from(USAGE_KEYS), counts, max_size=5),
    st.dictionaries(st.sampled_from(USAGE_KEYS), counts, max_size=5),
    json_values,
)


def normalised(value: Any) -> Any:
    """A Python JSON value as the edge re-serialises it (see the module docstring)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return min(max(value, I64_MIN), U64_MAX)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    if isinstance(value, list):
        return [normalised(v) for v in value]
    assert isinstance(value, dict)
    return {normalised(k): normalised(v) for k, v in value.items()}


def python_usage(
    chunks: Sequence[bytes], encoding: bytes | None = None
) -> tuple[TokenUsage | None, list[Any]]:
    """The UsageTap's usage of a JSON response, and the raw value it priced (if any)."""
    seen: list[Any] = []
    original = usage_from_response

    def spy(value: Any) -> TokenUsage | None:
        seen.append(value)
        return original(value)

    setattr(usage_module, "usage_from_response", spy)  # noqa: B010
    try:
        tap = UsageTap()
        head = [(b"content-type", b"application/json")]
        if encoding is not None:
            head.append((b"content-encoding", encoding))
        tap.start(200, head, None)
        for chunk in chunks:
            tap.feed(chunk)
        tap.end()
    finally:
        setattr(usage_module, "usage_from_response", original)  # noqa: B010
    return tap.usage, seen


Chunk = bytes | tuple[bytes, int]  # bytes, or (unit, count) for unit * count


def check_usage(probe: Probe, chunks: Sequence[Chunk], encoding: bytes | None = None) -> str | None:
    wire = [
        {"fill": latin1(c[0]), "count": c[1]} if isinstance(c, tuple) else latin1(c) for c in chunks
    ]
    args: list[Any] = [wire] if encoding is None else [wire, latin1(encoding)]
    rust: str | None = probe.call("usage", *args)
    expanded = [c[0] * c[1] if isinstance(c, tuple) else c for c in chunks]
    priced, seen = python_usage(expanded, encoding)
    raw = seen[-1] if seen else None
    if isinstance(raw, dict):
        assert rust is not None
        assert json.loads(rust) == normalised(raw)
    else:
        assert rust is None
    assert (usage_from_response(json.loads(rust)) if rust is not None else None) == priced
    return rust


DECOYS = st.sampled_from(
    [
        "",
        '"usage"',
        '"usage": ',
        '\\"usage\\": {\\"prompt_tokens\\": 9}',
        '"usage" \x0b: \x0c{"prompt_tokens": 8}',
        '"usage": {"total_tokens": 7',
        '"usage":"',
        "\u00e9\u2026",
    ]
)


@st.composite
def response_bodies(draw: st.DrawFn) -> bytes:
    doc: dict[str, Any] = draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3))
    if draw(st.booleans()):
        doc["usage"] = draw(usage_values)
    if draw(st.booleans()):
        doc["content"] = draw(DECOYS)
    items = list(doc.items())
    draw(st.randoms(use_true_random=False)).shuffle(items)
    text = json.dumps(dict(items), indent=draw(st.sampled_from([None, 1])))
    if draw(st.booleans()):  # usage spelled with an escape, or given twice
        text = text.replace('"usage"', draw(st.sampled_from(['"\\u0075sage"', '"usage"'])), 1)
    body = text.encode()
    mutation = draw(st.integers(0, 8))
    if mutation == 1:
        return b"\xef\xbb\xbf" + body
    if mutation == 2:
        cut = draw(st.integers(0, len(body)))
        return body[:cut] + draw(st.sampled_from([b"\xff", b"\xed\xa0\x80"])) + body[cut:]
    if mutation == 3:
        return body[: draw(st.integers(0, len(body)))]
    if mutation == 4:
        return body + draw(st.sampled_from([b" x", b'\n{"usage": {"prompt_tokens": 1}}', b" "]))
    if mutation == 5:
        return text.encode("utf-16")
    return body


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]


@FAST
@given(st.data())
def test_usage_small_bodies(probe: Probe, data: st.DataObject) -> None:
    body = data.draw(response_bodies())
    check_usage(probe, data.draw(chunked(body)))


@st.composite
def big_bodies(draw: st.DrawFn) -> list[Chunk]:
    """Bodies around and beyond MAX_JSON, the usage (and decoys) near the 64 KiB tail's edge."""
    usage = draw(usage_values)
    after = draw(DECOYS)
    usage_text = json.dumps(usage)
    broken = b"\xff" if draw(st.booleans()) else b""  # not UTF-8: no whole parse, tail replaced
    tail = b'"usage": ' + usage_text.encode() + b', "after": "' + after.encode() + broken
    tail += b'", "pad": "'
    end = b'"}'
    # distance of the "usage" key from the end of the body: inside, at, or past the tail
    pad = max(0, TAIL - len(tail) - len(end) + draw(st.integers(-12, 12)))
    if draw(st.booleans()):
        pad = draw(st.integers(0, 200))
    head = b'{"data": "'
    middle = b'", '
    total = len(head) + len(middle) + len(tail) + pad + len(end)
    filler = max(0, MAX_JSON - total + draw(st.sampled_from([-1, 0, 1, 2, 100_000])))
    return [head, (b"a", filler), middle + tail, (b"b", pad), end]


@SLOW
@given(big_bodies())
def test_usage_big_bodies(probe: Probe, chunks: list[Chunk]) -> None:
    check_usage(probe, chunks)


def test_usage_examples(probe: Probe) -> None:
    small = b'{"id": "x", "usage": {"prompt_tokens": 3, "completion_tokens": 4}}'
    assert check_usage(probe, [small[:7], small[7:]]) == '{"completion_tokens":4,"prompt_tokens":3}'
    assert check_usage(probe, [b'{"usage": {"prompt_tokens": 3}, "n": NaN}']) is not None
    assert check_usage(probe, [b'{"usage": [1]}']) is None
    assert check_usage(probe, []) is None
    huge = b'{"usage": {"prompt_tokens": ' + b"9" * 30 + b"}}"
    assert json.loads(check_usage(probe, [huge]) or "null") == {"prompt_tokens": U64_MAX}
    # exactly MAX_JSON: parsed whole (usage first); one byte more: only the tail is searched
    head = b'{"usage": {"prompt_tokens": 5}, "data": "'
    for extra, found in ((0, True), (1, False)):
        filler = MAX_JSON - len(head) - 2 + extra
        rust = check_usage(probe, [head, (b"a", filler), b'"}'])
        assert (rust is not None) is found
    # beyond MAX_JSON: the last "usage" followed by ':' in the last 64 KiB decides
    tail = b'"usage": {"prompt_tokens": 6}, "z": [{"usage": 1}]}'
    assert check_usage(probe, [b'{"a": "', (b"a", MAX_JSON), b'", ', tail]) is None
    tail = b'"usage": {"prompt_tokens": 6}, "z": "the \\"usage\\" of it"}'
    rust = check_usage(probe, [b'{"a": "', (b"a", MAX_JSON), b'", ', tail])
    assert rust == '{"prompt_tokens":6}'


@FAST
@given(st.data())
def test_usage_compressed_bodies(probe: Probe, data: st.DataObject) -> None:
    """gzip/deflate answers: the copy is decompressed at the end (truncated, corrupt or
    mislabelled streams give no usage on both sides)."""
    body = data.draw(response_bodies())
    packed = gzip.compress(body) if data.draw(st.booleans()) else zlib.compress(body)
    cut = data.draw(st.sampled_from([len(packed), len(packed), len(packed) - 1, 2]))
    packed = packed[:cut] + data.draw(st.sampled_from([b"", b"xyz"]))
    encoding = data.draw(st.sampled_from([b"gzip", b" X-GZIP ", b"deflate", b"br", b"identity"]))
    check_usage(probe, data.draw(chunked(packed)), encoding)


def test_usage_compressed_examples(probe: Probe) -> None:
    small = b'{"id": "x", "usage": {"prompt_tokens": 3, "completion_tokens": 4}}'
    want = '{"completion_tokens":4,"prompt_tokens":3}'
    assert check_usage(probe, [gzip.compress(small)], b"gzip") == want
    assert check_usage(probe, [zlib.compress(small)], b"deflate") == want
    assert check_usage(probe, [zlib.compress(small)], b"gzip") is None
    assert check_usage(probe, [gzip.compress(small)[:-2]], b"gzip") is None


def test_usage_deep_nesting(probe: Probe) -> None:
    """Nesting beyond MAX_DEPTH is no usage at the edge (Python reads it up to its recursion
    limit): the supervisor then charges the request's estimate, as for any body without usage."""
    deep = b'{"usage": {"prompt_tokens": 2, "d": ' + b"[" * 600 + b"]" * 600 + b"}}"
    assert usage_from_response(json.loads(deep)["usage"]) is not None
    assert probe.call("usage", [latin1(deep)]) is None
    ok = b'{"usage": {"prompt_tokens": 2, "d": ' + b"[" * 100 + b"]" * 100 + b"}}"
    assert check_usage(probe, [ok]) is not None
