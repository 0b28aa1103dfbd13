"""The edge's audit-rendering and pricing ports (native/edge/src/{audit,pricing}.rs) against the
Python code they port, through the ``probe_audit`` binary.

* ``render_request``: a record line goes through the real :class:`~keyguard.gateway.edge.records.
  RecordIntake` (which builds the :class:`~keyguard.gateway.audit.RequestRecord`), then
  :func:`~keyguard.gateway.server.audit_row` and the real :class:`~keyguard.vault.audit.
  UniformAppender` (redaction with the registry holding exactly the edge's ``known`` secrets,
  :class:`~keyguard.domain.audit.UniformEncoder`): the probe must give the same seven strings
  (content, time, details and the stored actor, subject, source, outcome columns), or
  ``None`` (never for an ordinary record).
* ``PriceTable.from_json`` / ``cost_nano`` and ``usage_from_response`` against
  :mod:`keyguard.domain.pricing`. The deliberate differences (``pricing.rs`` docs): the edge
  refuses tables with a NaN, infinite or huge (> 1e290) price and price strings with non-ASCII
  digits; usage integers travel clamped to 64 bits (the edge re-serialises usage that way).

Key-shaped values are built at run time (never literals in the source).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fakes.edgebin import Probe
from keyguard.domain import redaction
from keyguard.domain.keys import generate_openai_style_key, generate_virtual_key
from keyguard.domain.pricing import MAX_COST_NANO, PriceTable, usage_from_response
from keyguard.gateway.audit import RequestRecord
from keyguard.gateway.edge.records import RecordIntake
from keyguard.gateway.server import REQUEST_DETAILS, audit_row
from keyguard.vault.audit import AuditLog, UniformAppender

PRICES_JSON = Path(__file__).resolve().parents[2] / "src" / "keyguard" / "data" / "prices.json"
U64_MAX = 2**64 - 1
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1

FAST = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# -- the probe -------------------------------------------------------------------------------------


@pytest.fixture
def probe(probe_of: Callable[[str], Probe]) -> Probe:
    return probe_of("probe_audit")


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


# -- the Python side of render_request -------------------------------------------------------------


class _Log:
    """Stands in for the vault's AuditLog: encodes the items as ``_write`` does, stores nothing."""

    def __init__(self) -> None:
        self.encoded: list[tuple[bytes, str, str]] = []
        self.columns: list[tuple[str, str, str, str]] = []

    def _write(self, items: Sequence[tuple[Any, ...]], encode: Callable[..., Any]) -> list[Any]:
        self.encoded.extend(encode(*item) for item in items)
        # (time, action, actor, subject, source, outcome, values): the stored text columns
        self.columns.extend(tuple(item[2:6]) for item in items)
        return list(items)


def python_render(rec: dict[str, Any], known: Sequence[str]) -> tuple[str, ...]:
    """The record line through RecordIntake, audit_row and UniformAppender, as the core does."""
    items: list[object] = []
    intake = RecordIntake(items.append)
    intake.intake(json.dumps({"type": "r", **rec}).encode())
    assert len(items) == 1
    record = items[0]
    assert isinstance(record, RequestRecord)
    log = _Log()
    with registered(known):
        appender = UniformAppender(cast(AuditLog, log), "gateway.request", REQUEST_DETAILS)
        appender.append([audit_row(record)])
    assert len(log.encoded) == 1
    content, when_iso, details = log.encoded[0]
    return (content.decode("ascii"), when_iso, details, *log.columns[0])


# -- generated records -----------------------------------------------------------------------------


def key_shaped() -> st.SearchStrategy[str]:
    return st.sampled_from(["proj", "svcacct", "admin", "user", "vk"]).map(
        lambda kind: generate_virtual_key()[1] if kind == "vk" else generate_openai_style_key(kind)
    )


NO_SURROGATES = st.characters(exclude_categories=["Cs"])
texts = st.text(NO_SURROGATES, max_size=24)
ascii_texts = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24)
odd_pieces = st.sampled_from(
    ['"', "\\", "\n", "\t", "\x00", "\x7f", "\u00e9", "\u2028", "\u2026", "\U0001f600", "%2F", "/"]
)
pieces = st.one_of(ascii_texts, texts, odd_pieces, key_shaped())
path_text = st.one_of(
    st.lists(pieces, max_size=8).map(lambda parts: "/v1/" + "/".join(parts)),
    st.tuples(st.integers(500, 530), pieces).map(lambda t: "/" + "p" * t[0] + t[1]),
)
model_text = st.one_of(
    st.none(),
    st.just(""),
    st.sampled_from(["gpt-4o", "gpt-4o-mini-2024-07-18", "o1"]),
    st.lists(pieces, max_size=6).map("".join),
    st.tuples(st.integers(190, 210), pieces).map(lambda t: "m" * t[0] + t[1]),
)
latencies = st.one_of(
    st.sampled_from(
        [0.0, -0.0, 1e-7, 1e-4, 5e-4, 0.0625, 2.675, 123456789.123, 1e16, 1.5e17, 1e300, 5e-324]
    ),
    st.floats(0, 100_000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(0, 10**9).map(lambda n: n / 1000),
    st.integers(0, 10**9).map(lambda n: n / 10_000),
    st.integers(0, 10**7).map(lambda n: n / 16),  # exact ties at the third decimal: half to even
)
now_us = 1_767_225_600_000_000  # 2026-01-01
times = st.one_of(
    st.integers(0, 2**53 - 1),
    st.integers(0, 10**9).map(lambda s: now_us + s * 1_000_000),  # microsecond 0
    st.integers(0, 10**15).map(lambda d: now_us + d),
)
client_ips = st.one_of(st.ip_addresses().map(str), texts, key_shaped())
key_ids = st.one_of(
    st.none(),
    st.just(""),
    st.text("0123456789abcdefghijklmnopqrstuvwxyz", min_size=12, max_size=12),
    texts,
)
methods = st.one_of(st.sampled_from(["GET", "POST", "DELETE", "PATCH"]), texts)
versions = st.one_of(st.none(), st.integers(I64_MIN, I64_MAX))
upstreams = st.one_of(st.none(), st.sampled_from(["openai", "azure-eu"]), texts, key_shaped())


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "t": draw(times),
        "key_id": draw(key_ids),
        "client_ip": draw(client_ips),
        "method": draw(methods),
        "path": draw(path_text),
        "model": draw(model_text),
        "status": draw(st.one_of(st.integers(100, 599), st.integers(0, 65535))),
        "latency_ms": draw(latencies),
        "upstream": draw(upstreams),
        "version": draw(versions),
    }


@st.composite
def known_and_record(draw: st.DrawFn) -> tuple[list[str], dict[str, Any]]:
    """Known secrets, some of them planted in the record's texts."""
    known = draw(
        st.lists(
            st.one_of(key_shaped(), st.text(NO_SURROGATES, min_size=4, max_size=20)), max_size=3
        )
    )
    rec = draw(records())
    for value in known:
        field = draw(st.sampled_from(["path", "model", "upstream", "client_ip", "key_id", None]))
        if field is not None:
            rec[field] = (rec.get(field) or "") + value
    return known, rec


CONSTANTS = ("gateway.request", *REQUEST_DETAILS)


def ordinary(rng_pieces: Sequence[str]) -> dict[str, Any]:
    return {
        "t": now_us + 123_456,
        "key_id": "abcdefghijkl",
        "client_ip": "192.0.2.1",
        "method": "POST",
        "path": "/v1/chat/completions",
        "model": "gpt-4o",
        "status": 200,
        "latency_ms": 12.345678,
        "upstream": "openai",
        "version": 1,
        **dict(zip(["path", "model"], rng_pieces)),
    }


# -- render_request --------------------------------------------------------------------------------


def check_render(probe: Probe, known: list[str], rec: dict[str, Any]) -> bool:
    # the latency as its repr: the edge holds the float itself (serde_json may misread a text)
    got = probe.call("render", {**rec, "latency_ms": repr(float(rec["latency_ms"]))}, known)
    if got is None:
        return False
    assert tuple(got) == python_render(rec, known), rec
    return True


@FAST
@given(known_and_record())
@example(([], {**ordinary([]), "latency_ms": 0.0, "t": now_us}))
@example((["anonymou"], {**ordinary([]), "key_id": None}))
@example((["upstream"], ordinary([])))
@example((["y.request", "tream_ve"], ordinary([])))
@example(([], {**ordinary([]), "latency_ms": 1e-7, "key_id": None, "model": None}))
@example(([], {**ordinary([]), "latency_ms": 123456789.123, "upstream": None, "version": None}))
@example(([], {**ordinary([]), "client_ip": "2001:db8::1", "status": 503, "model": ""}))
def test_render_matches_uniform_encoder(
    probe: Probe, case: tuple[list[str], dict[str, Any]]
) -> None:
    known, rec = case
    assert math.isfinite(rec["latency_ms"]) and 0 <= rec["t"] < 2**53
    # None only when a known secret is part of the action or a detail name (redacted when
    # the appender is built, under the secrets known then: the supervisor renders those)
    doubtful = any(len(v) >= 8 and v in c for v in known for c in CONSTANTS)
    assert check_render(probe, known, rec) != doubtful


@FAST
@given(
    st.lists(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
        min_size=2,
        max_size=2,
    ),
    st.integers(0, 10**12),
    st.floats(0, 60_000),
)
def test_ordinary_records_always_render(
    probe: Probe, parts: list[str], dt: int, latency: float
) -> None:
    rec = {
        **ordinary(["/v1/" + parts[0], parts[1] or "gpt-4o"]),
        "t": now_us + dt,
        "latency_ms": latency,
    }
    assert check_render(probe, [], rec)


def test_secrets_in_fields_are_redacted(probe: Probe) -> None:
    upstream_key = generate_openai_style_key("proj")
    _, vk = generate_virtual_key()
    plain_secret = "not-a-key-shape-but-known"
    rec = {
        **ordinary([f"/v1/{vk}/x", f"m-{upstream_key}"]),
        "upstream": f"up {plain_secret}",
        "client_ip": upstream_key,
    }
    known = [upstream_key, plain_secret]
    row = probe.call("render", rec, known)
    assert tuple(row) == python_render(rec, known)
    content, when, details, actor, subject, source, outcome = row
    for secret in (upstream_key, vk, plain_secret):
        assert secret not in content
        assert all(secret not in text for text in (actor, subject, source))
    assert (actor, outcome) == ("key:abcdefghijkl", "ok") and "\u2026" in source
    assert content.isascii() and "\\u2026" in details
    assert when == "2026-01-01T00:00:00.123456+00:00"


def test_times_without_fraction_and_isoformat(probe: Probe) -> None:
    for t in (0, now_us, now_us + 1, now_us + 999_999, 2**53 - 1, 951_825_600_500_000):
        rec = {**ordinary([]), "t": t}
        _, when, *_ = probe.call("render", rec, [])
        assert when == datetime.fromisoformat(when).isoformat()
        assert check_render(probe, [], rec)
    _, when, *_ = probe.call("render", {**ordinary([]), "t": now_us}, [])
    assert when == "2026-01-01T00:00:00+00:00"


def test_render_cost(probe: Probe) -> None:
    """Measured cost of one render in Rust (a record with a known upstream key to check)."""
    rec = ordinary([])
    ns = probe.call("bench", rec, [generate_openai_style_key("proj")], 20_000)
    print(f"render_request: {ns:.0f} ns per record")
    assert 0 < ns < 20_000


# -- pricing ---------------------------------------------------------------------------------------

NAMES = ["gpt-4o", "gpt-4o-mini", "gpt-4", "o1", "o1-pro", "a", "a-b", "", "-", "\u00e9-x"]
good_prices = st.one_of(
    st.floats(0, 1000),
    st.integers(0, 10**6),
    st.floats(0, 1e-3),
    st.booleans(),
    st.floats(0, 100).map(lambda x: f" {x!r} "),
    st.sampled_from(["1_000", "2.5e-1", "+.5", "3.", "1e1_0", " \t7\u2003", "0"]),
)
bad_prices: st.SearchStrategy[Any] = st.sampled_from(
    [None, -1, -0.5, "abc", "", "1__0", "_1", "1_", ".", "e5", "nan", "inf", "-inf", "1e", [], {}]
)
prices_values = st.one_of(good_prices, good_prices, good_prices, bad_prices)


@st.composite
def model_prices(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 30)) == 0:
        return draw(st.sampled_from([[], "x", 1, None]))
    out: dict[str, Any] = {}
    for name in ("input", "cached_input", "output"):
        if name == "input" and draw(st.integers(0, 40)) == 0:
            continue  # missing input: an error
        if name != "input" and draw(st.booleans()):
            continue
        out[name] = draw(prices_values)
    return out


@st.composite
def tables(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {"default": draw(model_prices())}
    if draw(st.integers(0, 30)) == 0:
        del doc["default"]
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=6))
    doc["models"] = {n: draw(model_prices()) for n in names}
    if draw(st.integers(0, 30)) == 0:
        doc["models"] = draw(st.sampled_from([[], "x", None]))
    return doc


query_models = st.one_of(
    st.none(),
    st.sampled_from(NAMES),
    st.tuples(st.sampled_from(NAMES), st.sampled_from(["-2024", "-x-y", "x", "-", "mini"])).map(
        "".join
    ),
    texts,
)
tokens = st.one_of(
    st.integers(0, 2**40), st.integers(0, 5000), st.just(0), st.integers(2**32 - 2, 2**32 + 2)
)
queries = st.lists(st.tuples(query_models, tokens, tokens, tokens), min_size=1, max_size=8)


def _deliberately_refused(doc: dict[str, Any]) -> bool:
    """A table the edge refuses on purpose (see pricing.rs): non-finite or huge prices."""
    python = PriceTable.from_mapping(doc)
    prices = [python.default, *python.models.values()]
    values = [v for p in prices for v in (p.input, p.cached_input, p.output)]
    return any(not math.isfinite(v) or v > 1e290 for v in values)


def check_prices(probe: Probe, doc: dict[str, Any], qs: list[tuple[Any, int, int, int]]) -> bool:
    """The table as JSON text (``from_json_text``: exact) against Python; the table as a JSON
    value (``from_json``) gives the same costs, or refuses a float serde_json may misread."""
    got = probe.call("prices", json.dumps(doc), [list(q) for q in qs])
    by_value = probe.call("prices", doc, [list(q) for q in qs])
    assert by_value == got or "err" in by_value
    try:
        table = PriceTable.from_mapping(doc)
    except (ValueError, TypeError, AttributeError):
        assert "err" in got, doc
        return False
    if "err" in got:
        assert _deliberately_refused(doc), (doc, got)
        return False
    want = [table.cost_nano(m, i, o, c) for m, i, o, c in qs]
    assert got["costs"] == want, (doc, qs)
    return True


@FAST
@given(tables(), queries)
def test_price_tables_and_costs(probe: Probe, doc: dict[str, Any], qs: list[Any]) -> None:
    check_prices(probe, doc, qs)


@FAST
@given(
    st.lists(
        st.tuples(st.sampled_from(NAMES), st.floats(0, 1e6), st.floats(0, 1e6), st.floats(0, 1e6)),
        max_size=6,
    ),
    queries,
)
def test_costs_with_valid_tables(
    probe: Probe, entries: list[tuple[str, float, float, float]], qs: list[Any]
) -> None:
    doc = {
        "default": {"input": 15.0, "cached_input": 7.5, "output": 60.0},
        "models": {n: {"input": i, "cached_input": c, "output": o} for n, i, c, o in entries},
    }
    assert check_prices(probe, doc, qs)


@FAST
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from(sorted(json.loads(PRICES_JSON.read_text())["models"])), query_models
            ),
            tokens,
            tokens,
            tokens,
        ),
        min_size=1,
        max_size=10,
    )
)
def test_costs_of_the_shipped_table(probe: Probe, qs: list[Any]) -> None:
    doc = json.loads(PRICES_JSON.read_text())
    assert check_prices(probe, doc, qs)
    assert check_prices(probe, PriceTable.from_mapping(doc).to_mapping(), qs)
    # the shipped prices are all ordinary decimals: the JSON value reader takes them too
    assert "costs" in probe.call("prices", doc, [list(q) for q in qs])


def test_cost_half_even_and_caps(probe: Probe) -> None:
    doc = {
        "default": {"input": 0.0005, "output": 0.0015},
        "models": {"big": {"input": 1e9, "output": 1e9}},
    }
    qs = [
        (None, 1, 0, 0),
        (None, 3, 0, 0),
        (None, 0, 1, 0),
        ("big", 2**40, 2**40, 0),
        ("big-1", 2**32, 0, 2**33),
    ]
    assert check_prices(probe, doc, qs)
    costs = probe.call("prices", json.dumps(doc), [list(q) for q in qs])["costs"]
    assert costs[:3] == [0, 2, 2] and costs[3] == MAX_COST_NANO


def test_refused_tables(probe: Probe) -> None:
    # Python accepts these (its min/max check lets NaN through unless first); the edge refuses
    for doc in (
        {"default": {"input": 1.0, "output": "nan"}},
        {"default": {"input": "nan"}},
        {"default": {"input": 1e300}},
        {"default": {"input": "\u0661"}},  # ARABIC-INDIC ONE: Python's float() reads it
    ):
        assert "err" in probe.call("prices", json.dumps(doc), [[None, 1, 1, 0]])


# -- usage_from_response ---------------------------------------------------------------------------

counts = st.one_of(
    st.integers(0, 10**6),
    st.integers(I64_MIN, U64_MAX),
    st.just(U64_MAX),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none(),
    st.text(NO_SURROGATES, max_size=3),
    st.just({}),
)
details_obj = st.one_of(
    st.none(),
    st.just([]),
    st.dictionaries(st.sampled_from(["cached_tokens", "audio_tokens"]), counts),
)
FIELDS = [
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "total_tokens",
]
usage_docs = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), counts).flatmap(
        lambda d: st.fixed_dictionaries(
            {},
            optional={"prompt_tokens_details": details_obj, "input_tokens_details": details_obj},
        ).map(lambda extra: {**d, **extra})
    ),
    st.fixed_dictionaries({"prompt_tokens": counts, "total_tokens": counts}),
    st.fixed_dictionaries(
        {"input_tokens": counts, "output_tokens": counts, "input_tokens_details": details_obj}
    ),
    st.sampled_from([[], 1, "usage", None, {}]),
)


@FAST
@given(usage_docs)
@example({"prompt_tokens": 2**63 - 1, "completion_tokens": -5, "total_tokens": 7})
@example({"input_tokens": 0, "output_tokens": False, "total_tokens": True})
@example({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": U64_MAX})
def test_usage_from_response(probe: Probe, doc: Any) -> None:
    got = probe.call("usage", json.dumps(doc))
    want = usage_from_response(doc)
    if want is None:
        assert got is None
    else:
        assert got == [want.input_tokens, want.output_tokens, want.cached_tokens, want.total]
