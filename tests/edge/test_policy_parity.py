"""Differential tests: the edge's pure decisions (native/edge, library ``kgpolicy``) against the
Python functions they port, through the ``probe_policy`` binary (JSON lines on stdin/stdout).

One probe process serves the whole module. Bytes travel as hex, floats as their ``repr`` (the
probe parses them with correct rounding, so both sides compute on the very same doubles), and
every answer must be the same as Python's. Virtual keys are generated at run time.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from keyguard.domain import policy as pypolicy
from keyguard.domain.keys import BASE62, generate_virtual_key, parse_virtual_key
from keyguard.domain.limits import DEFAULT_LEASE_S, KeyCounters, Limits, Reservation
from keyguard.domain.pricing import Estimate
from keyguard.domain.records import VirtualKey
from keyguard.errors import Forbidden, KeyFormatError, RateLimited
from keyguard.gateway import paths as pypaths
from keyguard.gateway.clientip import BadForwarding, ClientIpResolver
from keyguard.gateway.headers import bearer_token
from keyguard.gateway.throttle import FailedAuthThrottle
from keyguard.vault.auth import KeyAuthenticator, _Entry, secret_digest, split_token

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ProbeError(Exception):
    """The probe answered ``{"error": ...}``."""


class Probe:
    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def __call__(self, fn: str, *args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"fn": fn, "args": list(args)}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"probe exited ({self.proc.poll()}) on {fn}"
        reply = json.loads(line)
        if "error" in reply:
            raise ProbeError(reply["error"])
        return reply["ok"]

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=10)
        self.proc.stdout.close()
        assert rc == 0


_probes: dict[str, Probe] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_probe() -> Iterator[None]:
    yield
    p = _probes.pop("probe", None)
    if p is not None:
        p.close()


@pytest.fixture
def probe(edge_bin: Callable[[str], Path]) -> Probe:
    """The module's one probe process (started by the first test that needs it)."""
    p = _probes.get("probe")
    if p is None:
        p = _probes["probe"] = Probe(edge_bin("probe_policy"))
    return p


FIXTURE_OK = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def hx(b: bytes) -> str:
    return b.hex()


def fl(x: float) -> str:
    """A float as text that parses back to the same double."""
    return repr(x)


# -- virtual keys ----------------------------------------------------------------------------


def py_parse(token: str) -> list[str] | None:
    try:
        parts = parse_virtual_key(token)
    except KeyFormatError:
        return None
    return [parts.key_id, parts.secret]


@st.composite
def tokens(draw: st.DrawFn) -> str:
    _, token = generate_virtual_key()
    kind = draw(st.sampled_from(["good", "char", "drop", "add", "case", "swap", "text"]))
    if kind == "good":
        return token
    if kind == "char":
        i = draw(st.integers(0, len(token) - 1))
        c: str = draw(st.sampled_from([*BASE62, "_", "-", "é", " ", "\n"]))
        return token[:i] + c + token[i + 1 :]
    if kind == "drop":
        i = draw(st.integers(0, len(token) - 1))
        return token[:i] + token[i + 1 :]
    if kind == "add":
        return token + draw(st.sampled_from(["a", "\n", " ", "0"]))
    if kind == "case":
        i = draw(st.integers(3, len(token) - 1))
        return token[:i] + token[i].swapcase() + token[i + 1 :]
    if kind == "swap":
        i = draw(st.integers(3, len(token) - 2))
        return token[:i] + token[i + 1] + token[i] + token[i + 2 :]
    return draw(st.text(max_size=70))


@FIXTURE_OK
@given(token=tokens())
def test_parse_virtual_key(probe: Probe, token: str) -> None:
    want = py_parse(token)
    assert probe("parse_virtual_key", token) == want
    split = split_token(token)
    assert want == (list(split) if split is not None else None)


def test_parse_virtual_key_fixed_cases(probe: Probe) -> None:
    key_id, token = generate_virtual_key()
    assert probe("parse_virtual_key", token) == [key_id, token[15:-6]]
    # a wrong checksum (every other last character) is refused by both
    for c in "0aZ":
        bad = token[:-1] + c
        assert probe("parse_virtual_key", bad) == py_parse(bad)
    assert probe("parse_virtual_key", token[:-1]) is None
    assert probe("parse_virtual_key", token.upper()) is None


@FIXTURE_OK
@given(
    values=st.lists(
        st.lists(
            st.sampled_from(
                [
                    b" ",
                    b"\t",
                    b"\r\n",
                    b"\x0b",
                    b"\x1c",
                    b"Bearer",
                    b"bearer",
                    b"BEARER",
                    b"Basic",
                    b"tok",
                    b"kg_x",
                    b"\xc3\xa9",
                    b"\x80",
                    b"=",
                    b"\x00",
                ]
            ),
            max_size=6,
        ).map(b"".join),
        max_size=3,
    )
)
def test_bearer_token(probe: Probe, values: list[bytes]) -> None:
    want = bearer_token([(b"authorization", v) for v in values])
    assert probe("bearer_token", [hx(v) for v in values]) == want


@FIXTURE_OK
@given(server_key=st.binary(max_size=130), secret=st.text(alphabet=BASE62, max_size=60))
def test_secret_digest(probe: Probe, server_key: bytes, secret: str) -> None:
    assert probe("digest", hx(server_key), secret) == secret_digest(server_key, secret).hex()


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
T0_US = 1_800_000_000 * 10**6


def at(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


@FIXTURE_OK
@given(
    stored=st.lists(st.tuples(st.booleans(), st.none() | st.integers(-3, 3)), max_size=5),
    now_off=st.integers(-3, 3),
)
def test_digest_matches(probe: Probe, stored: list[tuple[bool, int | None]], now_off: int) -> None:
    target = hashlib.sha256(b"target").digest()
    other = hashlib.sha256(b"other").digest()
    now = at(T0_US + now_off)
    entries = tuple(
        (target if same else other, None if off is None else at(T0_US + off))
        for same, off in stored
    )
    fake = types.SimpleNamespace(_entries={"k": _Entry(cast(VirtualKey, None), entries)})
    want = KeyAuthenticator._match(cast(KeyAuthenticator, fake), "k", target, now) is not None
    got = probe(
        "digest_matches",
        [[hx(d), None if u is None else fl(u.timestamp())] for d, u in entries],
        hx(target),
        fl(now.timestamp()),
    )
    assert got == want


# -- globs -----------------------------------------------------------------------------------

GLOB_ALPHABET = "ab-z*?[]!^\\&~|/.é"


def py_matcher(patterns: Sequence[str]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pypolicy._Matcher.build("allowed_models", patterns)
        except Exception:  # ConfigError, and whatever translate/re raise
            return None


@settings(FIXTURE_OK, max_examples=400)
@given(
    patterns=st.lists(
        st.text(alphabet=GLOB_ALPHABET, min_size=1, max_size=8)
        | st.sampled_from(["", "a b", "gpt-4o*", "[a-", "[!]", "[]-a]", "x\x7f", "\x1f"]),
        max_size=3,
    ),
    values=st.lists(st.text(alphabet=GLOB_ALPHABET + "\n", max_size=6), min_size=1, max_size=8),
)
def test_matcher(probe: Probe, patterns: list[str], values: list[str]) -> None:
    m = py_matcher(patterns)
    # values worth trying: the patterns themselves, and with their stars removed
    values = values + patterns + [p.replace("*", "") for p in patterns]
    if m is None:
        event("matcher: refused")
        with pytest.raises(ProbeError):
            probe("matcher", patterns, values)
        return
    n = sum(map(m.allows, values))
    event("matcher: " + ("none" if n == 0 else "all" if n == len(values) else "some") + " allowed")
    allow_all, allows = probe("matcher", patterns, values)
    assert allow_all == m.allow_all
    assert allows == [m.allows(v) for v in values], (patterns, values)


def test_matcher_fixed_cases(probe: Probe) -> None:
    patterns = ["gpt-4o*", "o[1-3]-*", "[!x]?", "*mini", "/v1/files*"]
    values = [
        "gpt-4o",
        "gpt-4o-mini",
        "GPT-4o",
        "o2-preview",
        "o4-x",
        "ab",
        "xb",
        "a-mini",
        "/v1/files/x/content",
        "/v1/file",
    ]
    m = py_matcher(patterns)
    assert probe("matcher", patterns, values) == [False, [m.allows(v) for v in values]]
    assert probe("matcher", [], ["anything"]) == [True, [True]]
    with pytest.raises(ProbeError, match="allowed_models"):
        probe("policy", ["a b"], [], [], [])


# -- addresses -------------------------------------------------------------------------------


@st.composite
def addresses(draw: st.DrawFn) -> IPAddress:
    kind = draw(st.sampled_from(["v4", "v6", "mapped", "near"]))
    if kind == "v4":
        return ipaddress.IPv4Address(
            draw(st.sampled_from([0x0A000001, 0xC0A80101, 0x7F000001])) + draw(st.integers(0, 300))
        )
    if kind == "mapped":
        return ipaddress.IPv6Address((0xFFFF << 32) | draw(st.integers(0x0A000000, 0x0A0000FF)))
    if kind == "near":
        return ipaddress.IPv6Address((0x20010DB8 << 96) | draw(st.integers(0, 2**70)))
    return ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))


@st.composite
def cidr_texts(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        ip = ipaddress.IPv4Address(draw(st.integers(0x0A000000, 0x0A0000FF)))
        return f"{ip}/{draw(st.integers(0, 33))}"
    if kind == 1:
        net = ipaddress.IPv4Network(f"10.0.0.0/{draw(st.integers(0, 32))}", strict=False)
        mask = net.netmask if draw(st.booleans()) else net.hostmask
        return f"10.0.0.{draw(st.integers(0, 255))}/{mask}"
    if kind == 2:
        return f"::ffff:10.0.0.{draw(st.integers(0, 255))}/{draw(st.integers(90, 129))}"
    if kind == 3:
        return f"2001:db8::{draw(st.integers(0, 0xFFFF)):x}/{draw(st.integers(0, 130))}"
    if kind == 4:
        return str(draw(addresses()))
    if kind == 5:
        ws = st.sampled_from(["", " ", "\t", "\x1c", "\xa0", "\u2003"])
        return draw(ws) + draw(cidr_texts()) + draw(ws)
    if kind == 6:
        return draw(
            st.sampled_from(
                [
                    "010.0.0.1",
                    "10.0.0.1/008",
                    "10.0.0.1/-1",
                    "10.0.0.1/+8",
                    "1.2.3.4/",
                    "1/2/3",
                    "fe80::1%eth0/64",
                    "fe80::1%/64",
                    "::ffff:0:0/95",
                    "::/0",
                    "0.0.0.0/0",
                    "1.2.3.4/255.0.255.0",
                    "1.2.3.4/0.0.0.0",
                    "::1.2.3.4",
                    "1:2:3:4:5:6:7::",
                    "::1:2:3:4:5:6:7:8",
                    "1:2:3:4:5:6:1.2.3.4",
                    "1::2::3",
                    "12345::",
                    "١.2.3.4",
                    "10.0.0.0/٨",
                ]
            )
        )
    return draw(st.text(alphabet="0123456789abcdef.:/% f", max_size=16))


@FIXTURE_OK
@given(cidrs=st.lists(cidr_texts(), max_size=3), ips=st.lists(addresses(), min_size=1, max_size=6))
def test_networks(probe: Probe, cidrs: list[str], ips: list[IPAddress]) -> None:
    try:
        compiled = pypolicy.compile_policy([], [], cidrs)
    except Exception:
        with pytest.raises(ProbeError):
            probe("networks", cidrs, [str(ip) for ip in ips])
        return
    empty, contains = probe("networks", cidrs, [str(ip) for ip in ips])
    assert empty == compiled.any_ip
    assert [empty or c for c in contains] == [compiled.allows_ip(ip) for ip in ips]
    # addresses at both ends of every network
    members: list[IPAddress] = []
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
        *compiled.networks_v4,
        *compiled.networks_v6,
    ]
    for n in nets:
        members.append(n.network_address)
        members.append(n.broadcast_address)
    if members:
        _, got = probe("networks", cidrs, [str(ip) for ip in members])
        # (a v6 network's mapped addresses count as IPv4 on both sides)
        assert got == [compiled.allows_ip(ip) for ip in members]
        assert any(got)


@FIXTURE_OK
@given(ip=addresses())
def test_normalise(probe: Probe, ip: IPAddress) -> None:
    assert ipaddress.ip_address(probe("normalise", str(ip))) == pypolicy.normalise_ip(ip)


TRUSTED = ["10.0.0.0/24", "2001:db8::/64", "::ffff:10.0.1.0/120"]


@st.composite
def hop_texts(draw: st.DrawFn) -> str:
    ip = draw(addresses())
    text = str(ip)
    form = draw(st.integers(0, 8))
    if form == 1:
        text = f"[{ip}]"
    elif form == 2:
        text = f"[{ip}]:{draw(st.integers(0, 65535))}" if ip.version == 6 else f"{ip}:443"
    elif form == 3:
        text = f'"{text}"'
    elif form == 4:
        text = f"{text}%eth0" if ip.version == 6 else f"{text}%x"
    elif form == 5:
        text = draw(
            st.sampled_from(
                [
                    "unknown",
                    "_hidden",
                    "",
                    "[::1",
                    "1.2.3.4:5:6",
                    "01.2.3.4",
                    '" 1.2.3.4"',
                    "[1.2.3.4]",
                    "::ffff:10.0.0.9",
                    "10.0.0.7",
                ]
            )
        )
    elif form == 6:
        text = draw(st.text(alphabet='0123456789.:[]"% af', max_size=12))
    return text


@st.composite
def xff_values(draw: st.DrawFn) -> bytes:
    hops = draw(st.lists(hop_texts(), max_size=4))
    sep = draw(st.sampled_from([",", ", ", " ,\t", ",,"]))
    return (sep.join(hops)).encode("latin-1", "replace")


@st.composite
def forwarded_values(draw: st.DrawFn) -> bytes:
    elements = []
    for hop in draw(st.lists(hop_texts(), max_size=3)):
        pairs = [f"{draw(st.sampled_from(['for', 'For', 'FOR', ' for ', 'fo', 'by']))}={hop}"]
        if draw(st.booleans()):
            pairs.append(draw(st.sampled_from(["proto=https", "by=10.0.0.1", "host=x", ""])))
        if draw(st.booleans()):
            pairs.reverse()
        elements.append(";".join(pairs))
    return ",".join(elements).encode("latin-1", "replace")


@settings(FIXTURE_OK, max_examples=300)
@given(
    peer=addresses()
    | st.sampled_from(["10.0.0.1", "10.0.0.200", "2001:db8::5", "::ffff:10.0.1.4"]).map(
        ipaddress.ip_address
    ),
    xff=st.lists(xff_values(), max_size=2),
    fwd=st.lists(forwarded_values(), max_size=2),
    raw=st.lists(st.binary(max_size=12), max_size=1),
)
def test_resolve(
    probe: Probe, peer: IPAddress, xff: list[bytes], fwd: list[bytes], raw: list[bytes]
) -> None:
    xff = xff + raw
    headers = [(b"x-forwarded-for", v) for v in xff] + [(b"forwarded", v) for v in fwd]
    try:
        want: IPAddress | None = ClientIpResolver(TRUSTED).resolve(str(peer), headers)
    except BadForwarding:
        want = None
    got = probe("resolve", TRUSTED, str(peer), [hx(v) for v in xff], [hx(v) for v in fwd])
    event("resolve: " + ("bad" if want is None else "peer" if want == peer else "forwarded"))
    assert (ipaddress.ip_address(got) if got is not None else None) == want


def test_resolve_fixed_cases(probe: Probe) -> None:
    def both(peer: str, xff: list[bytes], fwd: list[bytes]) -> str | None:
        headers = [(b"x-forwarded-for", v) for v in xff] + [(b"forwarded", v) for v in fwd]
        try:
            want: str | None = str(ClientIpResolver(TRUSTED).resolve(peer, headers))
        except BadForwarding:
            want = None
        got = probe("resolve", TRUSTED, peer, [hx(v) for v in xff], [hx(v) for v in fwd])
        assert (str(ipaddress.ip_address(got)) if got is not None else None) == want
        return want

    assert both("10.0.0.1", [b"1.1.1.1, 10.0.0.9"], []) == "1.1.1.1"
    assert both("10.0.0.1", [b"1.1.1.1"], [b"for=2.2.2.2"]) is None
    assert both("10.0.0.1", [], [b'for="[2001:db8::1]:80", for=3.3.3.3']) == "3.3.3.3"
    assert both("10.0.0.1", [], [b"proto=http"]) is None
    assert both("1.1.1.1", [b"junk"], [b"junk"]) == "1.1.1.1"
    assert both("10.0.0.1", [b"10.0.0.5, 10.0.0.6"], []) == "10.0.0.5"
    with pytest.raises(ProbeError, match="trusted_proxies"):
        probe("resolve", ["nope"], "1.1.1.1", [], [])


# -- paths -----------------------------------------------------------------------------------

PATH_PIECES = [
    b"/",
    b"/",
    b"v1",
    b"chat",
    b".",
    b"..",
    b"%2e",
    b"%2E",
    b"%2f",
    b"%5C",
    b"%25",
    b"%00",
    b"%41",
    b"%",
    b"?",
    b"#",
    b"\\",
    b" ",
    b"\x80",
    b"\xc3\xa9",
    b"[",
    b"]",
    b"~",
    b"=",
    b"&",
    b"@",
    b":",
    b";",
    b"a",
    b"\x00",
    b"\t",
]


SAFE_PIECES = [b"/", b"/v1", b"/chat", b"a", b".", b"..", b"%2e", b"%2F", b"%41", b"%", b"~", b"@"]


@settings(FIXTURE_OK, max_examples=400)
@given(
    target=st.lists(st.sampled_from(PATH_PIECES), max_size=10).map(b"".join)
    | st.tuples(
        st.lists(st.sampled_from(SAFE_PIECES), max_size=8).map(b"".join),
        st.sampled_from([b"", b"?", b"?a=1&b=[2]", b"?x y", b"?%2e/..", b"?\\"]),
    ).map(lambda t: b"/v1/" + t[0] + t[1])
)
def test_paths(probe: Probe, target: bytes) -> None:
    try:
        path, query = pypaths.split_target(target)
    except pypaths.BadPath:
        assert probe("split_target", hx(target)) is None
        return
    assert probe("split_target", hx(target)) == [hx(path), hx(query)]
    try:
        want_path: str | None = pypaths._check_path(path)
    except pypaths.BadPath:
        want_path = None
    assert probe("check_path", hx(path)) == want_path
    event(f"paths: check_path {'ok' if want_path is not None else 'refused'}")
    try:
        pypaths.check_query(query)
        query_ok = True
    except pypaths.BadPath:
        query_ok = False
    assert probe("check_query", hx(query)) is query_ok
    text = path.decode("latin-1")
    assert probe("clean_path", text) is pypolicy._clean_path(text)
    if want_path is not None and want_path.startswith("/v1/") and query_ok:
        for base in ["/v1", "/v1/", "/openai/v1//", ""]:
            want_target = pypaths.upstream_target(base, want_path, query).decode("ascii")
            assert probe("upstream_target", base, want_path, hx(query)) == want_target


@FIXTURE_OK
@given(path=st.text(alphabet="/.a%é", max_size=10))
def test_clean_path(probe: Probe, path: str) -> None:
    assert probe("clean_path", path) is pypolicy._clean_path(path)


# -- a key's policy --------------------------------------------------------------------------


def py_allows(
    compiled: pypolicy.CompiledPolicy, ip: IPAddress, path: str, model: str | None
) -> bool:
    key = types.SimpleNamespace(revoked_at=None, expires_at=None, policy=compiled, key_id="k")
    try:
        pypolicy.check_request(
            cast(VirtualKey, key), now=at(T0_US), client_ip=ip, path=path, model=model
        )
    except Forbidden:
        return False
    return True


@settings(FIXTURE_OK, max_examples=300)
@given(
    models=st.lists(
        st.sampled_from(["gpt-4o*", "o1", "o[13]-*", "*mini", "x y", "[!g]*"]), max_size=2
    ),
    endpoints=st.lists(
        st.sampled_from(["/v1/chat/completions", "/v1/files*", "/v1/*/x", "/v1/?mbeddings"]),
        max_size=2,
    ),
    cidrs=st.lists(
        st.sampled_from(["10.0.0.0/25", "::ffff:10.0.0.0/120", "2001:db8::/48", "bad"]), max_size=2
    ),
    queries=st.lists(
        st.tuples(
            addresses(),
            st.sampled_from(
                [
                    "/v1/chat/completions",
                    "/v1/files/f/content",
                    "/v1/files/../x",
                    "/v1//x",
                    "/v1/a/x",
                    "/v1/embeddings",
                    "/v1/files",
                    "/v1/files/.",
                ]
            ),
            st.none() | st.sampled_from(["gpt-4o", "gpt-4o-mini", "o1", "o3-mini", "GPT-4o", ""]),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_policy(
    probe: Probe,
    models: list[str],
    endpoints: list[str],
    cidrs: list[str],
    queries: list[tuple[IPAddress, str, str | None]],
) -> None:
    args = [[str(ip), path, model] for ip, path, model in queries]
    try:
        compiled = pypolicy.compile_policy(models, endpoints, cidrs)
    except Exception:
        with pytest.raises(ProbeError):
            probe("policy", models, endpoints, cidrs, args)
        return
    want = [py_allows(compiled, ip, path, model) for ip, path, model in queries]
    assert probe("policy", models, endpoints, cidrs, args) == want


# -- failed-authentication throttle ----------------------------------------------------------


@st.composite
def throttle_runs(draw: st.DrawFn) -> tuple[int, float, int, list[tuple[str, IPAddress, float]]]:
    burst = draw(st.integers(1, 4))
    rate = draw(st.sampled_from([0.2, 0.5, 1.0, 3.0, 0.1]))
    max_sources = draw(st.integers(1, 4))
    sources = draw(st.lists(addresses(), min_size=1, max_size=5))
    # /64 neighbours of the IPv6 sources share their bucket
    sources += [ipaddress.IPv6Address(int(s) ^ 1) for s in sources if s.version == 6]
    now = 1000.0
    ops = []
    for _ in range(draw(st.integers(1, 40))):
        now += draw(st.sampled_from([0.0, 0.0, 0.001, 0.1, 0.7, 1.0, 5.0, 30.0, -0.5]))
        ops.append(
            (draw(st.sampled_from(["fail", "fail", "retry"])), draw(st.sampled_from(sources)), now)
        )
    return burst, rate, max_sources, ops


@FIXTURE_OK
@given(run=throttle_runs())
def test_throttle(
    probe: Probe, run: tuple[int, float, int, list[tuple[str, IPAddress, float]]]
) -> None:
    burst, rate, max_sources, ops = run
    t = FailedAuthThrottle(burst, rate, max_sources)
    want: list[float | None] = []
    for op, ip, now in ops:
        if op == "fail":
            t.failure(ip, now)
            want.append(None)
        else:
            want.append(t.retry_after(ip, now))
    event("throttle: " + ("waits" if any(want) else "no wait"))
    got = probe(
        "throttle", burst, fl(rate), max_sources, [[op, str(ip), fl(now)] for op, ip, now in ops]
    )
    assert got == want


# -- rpm and concurrency ---------------------------------------------------------------------

Op = tuple[str, str, int]  # ("admit", key, microseconds) | ("release", "", lease number)


def py_limiter(limits: dict[str, Limits], ops: list[Op]) -> list[Any]:
    counters: dict[str, KeyCounters] = {}
    leases: list[tuple[KeyCounters, Reservation] | None] = []
    out: list[Any] = []
    for n, (op, key, x) in enumerate(ops):
        if op == "release":
            if x < len(leases) and (held := leases[x]) is not None:
                held[0].settle(held[1], 0, 0)
                leases[x] = None
            out.append(None)
            continue
        c = counters.setdefault(key, KeyCounters())
        try:
            res = c.reserve(f"r{n}", key, limits[key], Estimate(), at(x), DEFAULT_LEASE_S)
        except RateLimited as exc:
            out.append(["denied", str(exc), exc.code, exc.retry_after])
            continue
        out.append(["lease", len(leases)])
        leases.append((c, res))
    return out


def rust_limiter(probe: Probe, limits: dict[str, Limits], ops: list[Op]) -> list[Any]:
    wire: list[list[Any]] = []
    for op, key, x in ops:
        if op == "release":
            wire.append(["release", x])
        else:
            lim = limits[key]
            wire.append(["admit", key, lim.rpm, lim.max_concurrency, fl(at(x).timestamp())])
    return cast(list[Any], probe("limiter", wire))


@st.composite
def limiter_runs(draw: st.DrawFn, back_steps: bool) -> tuple[dict[str, Limits], list[Op]]:
    keys = draw(st.lists(st.sampled_from(["ka", "kb", "kc"]), min_size=1, max_size=3, unique=True))
    limits = {}
    for k in keys:
        rpm = draw(st.integers(0, 6)) if back_steps else draw(st.none() | st.integers(0, 6))
        limits[k] = Limits(rpm=rpm, max_concurrency=draw(st.none() | st.integers(0, 3)))
    steps = [
        0,
        0,
        1,
        250_000,
        999_999,
        1_000_000,
        7_300_000,
        30_000_000,
        59_999_999,
        60_000_000,
        61_000_000,
        900_000_000,
        1_000_000_000,
    ]
    if back_steps:
        steps += [-1, -1_000_000, -45_000_000, -120_000_000]
    us = T0_US + draw(st.integers(0, 999_999))
    ops: list[Op] = []
    admits = 0
    for _ in range(draw(st.integers(1, 40))):
        if admits and draw(st.integers(0, 3)) == 0:
            ops.append(("release", "", draw(st.integers(0, admits + 1))))
            continue
        us += draw(st.sampled_from(steps))
        ops.append(("admit", draw(st.sampled_from(keys)), us))
        admits += 1
    return limits, ops


@settings(FIXTURE_OK, max_examples=300)
@given(run=limiter_runs(back_steps=False))
def test_limiter(probe: Probe, run: tuple[dict[str, Limits], list[Op]]) -> None:
    limits, ops = run
    want = py_limiter(limits, ops)
    for kind in sorted({w[1].split(" ")[0] for w in want if w and w[0] == "denied"}):
        event(f"limiter: denied {kind}")
    assert rust_limiter(probe, limits, ops) == want


@FIXTURE_OK
@given(run=limiter_runs(back_steps=True))
def test_limiter_clock_steps_back(probe: Probe, run: tuple[dict[str, Limits], list[Op]]) -> None:
    # wall-clock steps back (by less than the edge's idle margin) with rpm set on every key
    limits, ops = run
    assert rust_limiter(probe, limits, ops) == py_limiter(limits, ops)


def test_limiter_messages_and_lease(probe: Probe) -> None:
    limits = {"ka": Limits(rpm=2), "kb": Limits(max_concurrency=1)}
    ops: list[Op] = [
        ("admit", "ka", T0_US),
        ("admit", "ka", T0_US + 500_000),
        ("admit", "ka", T0_US + 10_000_000),  # rpm: Retry-After 50 s
        ("admit", "kb", T0_US),
        ("admit", "kb", T0_US + 1),  # concurrency
        ("release", "", 2),
        ("admit", "kb", T0_US + 2),
        ("admit", "kb", T0_US + int(DEFAULT_LEASE_S * 1e6) + 2),  # the lease ran out
    ]
    got = rust_limiter(probe, limits, ops)
    assert got == py_limiter(limits, ops)
    assert got[2] == [
        "denied",
        "rate limit reached for key ka: 2 requests per minute",
        "rate_limit_exceeded",
        50.0,
    ]
    assert got[4] == [
        "denied",
        "too many concurrent requests for key kb (limit 1)",
        "rate_limit_exceeded",
        1.0,
    ]
    assert got[6] == ["lease", 3]
    assert got[7] == ["lease", 4]
