"""Base64-encoded keys: Kubernetes Secrets, CI variables, encoded .env values, encoded blobs."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import random
import re
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.domain.keys import fingerprint as fp
from keyguard.domain.secret import Secret
from keyguard.scanner import baseline as bl
from keyguard.scanner.encoded import ANCHORS, might_hold, stable_chars
from keyguard.scanner.engine import NEAR_MISSES, Binary, scan_bytes, scan_text, select
from keyguard.scanner.reporters import render_json, render_text
from keyguard.scanner.sarif import to_sarif
from scanner.keygen import (
    URLSAFE,
    admin_token,
    all_positive_keys,
    hard_negatives,
    openai_key,
    rand,
    virtual_key,
)

_GLUED_PREFIX = re.compile(rb"(?:sk-|kga?_)[A-Za-z0-9_-]*\Z")
SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
OPENAI_KINDS = ("proj", "svcacct", "admin", "user", "early-proj", "none-user", "svcacct-74")


def b64(value: str | bytes, urlsafe: bool = False) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()


def k8s_secret(**data: str) -> str:
    lines = "".join(f"  {name}: {value}\n" for name, value in data.items())
    return (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-secrets\n"
        f"type: Opaque\ndata:\n{lines}"
    )


# values are compared by fingerprint: a failing assertion never prints a key-shaped value


def _sentinels(keys: list[str]) -> list[str]:
    """A key, and its standard and URL-safe base64 forms: none may ever be printed."""
    return [s for k in keys for s in (k, b64(k), b64(k, urlsafe=True))]


def _assert_hidden(text: str, keys: list[str]) -> None:
    for sentinel in _sentinels(keys):
        assert sentinel not in text


def test_anchors_are_what_the_docs_say():
    assert stable_chars(b"sk-", 0) == b"c2st"
    assert ANCHORS[:3] == (b"VDNCbGJrRk", b"QzQmxia0ZK", b"UM0JsYmtGS")
    assert stable_chars(b"kg_", 0) == b"a2df" and stable_chars(b"kga_", 0) == b"a2dhX"


def test_kubernetes_secret_with_an_encoded_openai_key(tmp_path, scanner, rng):
    key = openai_key(rng, "proj")
    encoded = b64(key)
    text = k8s_secret(OPENAI_API_KEY=encoded)
    (tmp_path / "secret.yaml").write_text(text)
    report = scanner.scan_files(tmp_path, ["secret.yaml"])
    [f] = report.findings
    line_no = text.splitlines().index(f"  OPENAI_API_KEY: {encoded}") + 1
    assert (f.path, f.line, f.column) == ("secret.yaml", line_no, len("  OPENAI_API_KEY: ") + 1)
    assert (f.format, f.confidence, f.encoding) == ("openai-project", "high", "base64")
    # the decoded key's redacted form and fingerprint: baselines, --verify, vault lookups work
    real = Secret(key, register=False)
    assert fp(f.secret.reveal()) == fp(key)
    assert (f.fingerprint, f.redacted) == (real.fingerprint, real.redacted)


@pytest.mark.parametrize("make", [virtual_key, admin_token], ids=["kg_", "kga_"])
def test_encoded_keyguard_keys(make, rng):
    key = make(rng)
    text = k8s_secret(KEYGUARD_KEY=b64(key))
    [m] = scan_text(text, _all())
    assert fp(m.value) == fp(key) and m.encoding == "base64"
    [m] = scan_bytes(text.encode(), _all())
    assert fp(m.value) == fp(key)
    assert m.format == ("keyguard-virtual-key" if key.startswith("kg_") else "keyguard-admin-token")


def _all():
    from keyguard.scanner.detectors import load_detectors

    return load_detectors(plugins=False)


@pytest.mark.parametrize("urlsafe", [False, True], ids=["standard", "urlsafe"])
@pytest.mark.parametrize("kind", [*OPENAI_KINDS, "future", "virtual", "admin-token"])
def test_every_format_as_the_whole_value_and_inside_blobs(kind, urlsafe, rng):
    key = all_positive_keys(rng)[kind]
    # the value alone (alignment 0), then inside an encoded .env file / JSON config, with 1 and
    # 2 bytes before the key's 3-byte group (alignments 1 and 2) and text after it
    cases = {
        0: key.encode(),
        1: b"=" + key.encode() + b"\nDEBUG=1\n",
        2: b"K=" + key.encode() + b"\n",
        3: b'{"api_key": "' + key.encode() + b'", "org": "x"}',  # 13 bytes: alignment 1
        4: b"OPENAI_API_KEY=" + key.encode() + b"\nLOG_LEVEL=info\n",  # 15: alignment 0
        5: b"export OPENAI_KEY=" + key.encode(),  # 18: alignment 0
        6: b"#!/bin/sh\nexport OPENAI_KEY=" + key.encode(),  # 28: alignment 1
        7: b"#!/bin/sh\nexport OPENAI_KEYS=" + key.encode(),  # 29: alignment 2
    }
    for case, raw in cases.items():
        before = raw.index(key.encode())
        if kind in ("virtual", "admin-token") and before % 3 == 1:
            continue  # documented limit: kg_/kga_ at alignment 1 inside a blob
        encoded = b64(raw, urlsafe)
        text = f'env:\n  - name: BLOB\n    value: "{encoded}"\n'
        matches = scan_bytes(text.encode(), _all())
        assert [fp(m.value) for m in matches] == [fp(key)], (kind, case)
        [m] = matches
        assert m.encoding == ("base64url" if ("-" in encoded or "_" in encoded) else "base64")
        # reported where the key's first encoded character is
        assert (m.line, m.column) == (3, len('    value: "') + 1 + 4 * before // 3), case


def test_no_false_positives_in_random_base64(rng):
    blobs = []
    for n in range(1500):
        size = rng.choice([40, 48, 51, 56, 64, 65, 66, 96, 120, 164, 200, 240, 600])
        blobs.append(b64(rng.randbytes(size), urlsafe=n % 2 == 1))
    # random base64 that carries the anchors: random bytes around an encoded marker or prefix
    for prefix in (b"sk-", b"sk-proj-", b"kg_", b"kga_", b"T3BlbkFJ"):
        for pad in range(3):
            blobs.append(b64(rng.randbytes(pad) + prefix + rng.randbytes(160)))
            body = rand(rng, 40, URLSAFE)
            blobs.append(b64(rng.randbytes(pad) + b"sk-" + body.encode() + prefix))
    text = "\n".join(f"  K{i}: {b}" for i, b in enumerate(blobs))
    assert scan_bytes(text.encode(), _all()) == []


def test_encoded_fakes_and_hard_negatives_are_not_reported(rng):
    fakes = [*hard_negatives(rng), "sk-proj-" + "x" * 74 + "T3BlbkFJ" + "x" * 74]
    text = "".join(
        f"V{i}: {b64(v)}\nW{i}: {b64('x=' + v + chr(10))}\n" for i, v in enumerate(fakes)
    )
    assert scan_bytes(text.encode(), _all()) == []


def test_prefilter_rejects_ordinary_code(rng):
    code = "import pkg_resources\nJSON = {'Zone': 'XY', 'a2': 'data', 'c2': 'st'}\n" * 200
    assert not might_hold(code.encode())
    assert might_hold(b64(openai_key(rng)).encode())
    assert might_hold(b64(virtual_key(rng)).encode())


def test_many_near_misses_still_find_the_real_keyguard_key(rng):
    key = virtual_key(rng)
    noise = "".join(f"import pkg_resources as p{i}\n" for i in range(NEAR_MISSES * 3))
    assert select(_all(), noise.encode()) == []
    for text in (noise + key, key + "\n" + noise, noise[:200] + key + "\n" + noise):
        assert [fp(m.value) for m in scan_bytes(text.encode(), _all())] == [fp(key)]


def test_allow_marker_and_baseline(tmp_path, scanner, rng):
    keys = [openai_key(rng), virtual_key(rng)]
    (tmp_path / "secret.yaml").write_text(
        f"data:\n  A: {b64(keys[0])}  # keyguard: allow\n  B: {b64(keys[1])}\n"
    )
    report = scanner.scan_files(tmp_path, ["secret.yaml"])
    assert [(f.line, f.format) for f in report.findings] == [(3, "keyguard-virtual-key")]
    base = bl.Baseline()
    base.add(report.findings)
    path = tmp_path / "baseline.json"
    bl.save(base, path)
    _assert_hidden(path.read_text(), keys)
    loaded = bl.load(path)
    assert all(loaded.knows(f) for f in scanner.scan_files(tmp_path, ["secret.yaml"]).findings)
    # the same key written in plain text in the same file is the same baselined key
    (tmp_path / "secret.yaml").write_text(f"B: {keys[1]}\n")
    [plain] = scanner.scan_files(tmp_path, ["secret.yaml"]).findings
    assert loaded.knows(plain)


def test_reports_are_valid_and_never_show_the_key_or_its_encoding(tmp_path, scanner, rng):
    keys = [openai_key(rng, "svcacct"), virtual_key(rng), openai_key(rng)]
    (tmp_path / "secret.yaml").write_text(k8s_secret(A=b64(keys[0]), B=b64(keys[1], urlsafe=True)))
    (tmp_path / "app.py").write_text(f"KEY = '{keys[2]}'\n")
    report = scanner.scan_files(tmp_path, ["app.py", "secret.yaml"])
    assert [f.encoding for f in report.findings] == ["utf-8", "base64", "base64"]
    out = io.StringIO()
    render_json(report, out)
    doc = json.loads(out.getvalue())
    assert [f["encoding"] for f in doc["findings"]] == ["utf-8", "base64", "base64"]
    sarif = to_sarif(report)
    jsonschema.validate(sarif, SCHEMA)
    results = sarif["runs"][0]["results"]
    assert [r["properties"]["encoding"] for r in results] == ["utf-8", "base64", "base64"]
    assert "base64-encoded" in results[1]["message"]["text"]
    text = io.StringIO()
    render_text(report, text)
    assert "base64" in text.getvalue()
    _assert_hidden(out.getvalue() + json.dumps(sarif) + text.getvalue(), keys)


def test_utf16_file_with_an_encoded_key(tmp_path, scanner, rng):
    key = openai_key(rng, "admin")
    (tmp_path / "s.yaml").write_bytes(k8s_secret(K=b64(key)).encode("utf-16"))
    [f] = scanner.scan_files(tmp_path, ["s.yaml"]).findings
    assert fp(f.secret.reveal()) == fp(key) and f.format == "openai-admin"


def test_a_key_found_plain_and_encoded_on_one_line_is_one_finding(rng):
    key = openai_key(rng)
    line = f"a={b64(key)} b={b64(key, urlsafe=True)} c={key}\n"
    [m] = scan_text(line, _all())  # the plain one is kept: it is what the fixer can rewrite
    assert (m.column, m.encoding) == (line.index(" c=") + 4, "utf-8")
    [m] = scan_text(f"a={b64(key)} b={b64(key, urlsafe=True)}\n", _all())
    assert (m.column, m.encoding) == (3, "base64")
    assert len(scan_text(f"a={b64(key)}\nb={key}\n", _all())) == 2


def test_history_and_staged_find_encoded_keys(repo, scanner, rng):
    from keyguard.domain.keys import fingerprint
    from keyguard.scanner.gitsrc import scan_history, scan_staged
    from scanner.gitutil import git

    key, vk = openai_key(rng), virtual_key(rng)
    (repo / "README.md").write_text("hello\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "init")
    (repo / "secret.yaml").write_text(k8s_secret(A=b64(key)))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "add the secret")
    added_in = git(repo, "rev-parse", "HEAD")
    (repo / "secret.yaml").write_text("data: {}\n")
    git(repo, "commit", "-qam", "remove it")
    (repo / "ci.env").write_text(f"X=1\nKG_B64={b64(vk)}\n")
    git(repo, "add", "ci.env")
    [staged] = scan_staged(scanner, repo).findings
    assert (staged.path, staged.line, staged.encoding) == ("ci.env", 2, "base64")
    assert staged.fingerprint == fingerprint(vk)
    git(repo, "commit", "-qm", "ci")
    history = scan_history(scanner, repo)
    by_fp = {f.fingerprint: f for f in history.findings}
    assert set(by_fp) == {fingerprint(key), fingerprint(vk)}
    found = by_fp[fingerprint(key)]
    assert (found.path, found.line, found.commit, found.encoding) == (
        "secret.yaml",
        7,
        added_in,
        "base64",
    )


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    # an alphanumeric byte right before the key hides its start; so does a key prefix ("sk-",
    # "kg_") with key characters: the key would start there, longer, as in plain text
    before=st.binary(max_size=12).filter(
        lambda b: (not b or not chr(b[-1]).isalnum()) and not _GLUED_PREFIX.search(b)
    ),
    # a key-alphabet byte right after the key would make it longer, as in plain text
    after=st.binary(max_size=12).filter(
        lambda b: not b or not (chr(b[0]).isalnum() or b[:1] in b"-_")
    ),
    kind=st.sampled_from(["proj", "svcacct", "admin", "user", "virtual", "admin-token"]),
    urlsafe=st.booleans(),
    left=st.sampled_from([" ", "\n", '"', "'", ": ", "=", "\t", "["]),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_an_encoded_key_in_random_bytes_is_found(before, after, kind, urlsafe, left, seed):
    key = all_positive_keys(random.Random(seed))[kind]
    if kind in ("virtual", "admin-token") and len(before) % 3 == 1:
        return  # documented limit: kg_/kga_ 1 byte into a group of a larger blob
    encoded = b64(before + key.encode() + after, urlsafe)
    matches = scan_text(f"x{left}{encoded}\n", _all())
    assert fp(key) in [fp(m.value) for m in matches]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([a.decode() for a in ANCHORS]),
            st.sampled_from(list("ABCabc0123+/=-_ \n\"'")),
            st.characters(),
        ),
        max_size=200,
    ).map("".join)
)
def test_scanning_anchor_noise_never_crashes(text):
    for m in scan_text(text, _all()):
        assert m.line >= 1 and m.column >= 1
    with contextlib.suppress(Binary):
        scan_bytes(text.encode("utf-8", "surrogatepass"), _all())


def test_prefilter_after_many_pivot_letters(rng):
    """Past the per-letter limit the anchors are searched with find()."""
    from keyguard.scanner.encoded import _PIVOT_LIMIT

    for anchor in (b"QzQmxia0ZK", b"VDNCbGJrRk", b"UM0JsYmtGS"):
        for gap in range(12):
            filler = b"Z J " * (_PIVOT_LIMIT - 1) + b"Z" * 2 + b"J" * 2
            assert might_hold(filler[: len(filler) - gap] + anchor + b" "), (anchor, gap)
            assert not might_hold(filler[: len(filler) - gap] + anchor[:-1] + b" ")
    key = openai_key(rng)
    text = "Z J " * 500 + "\nsecret: " + b64(key) + "\n"
    [m] = scan_bytes(text.encode(), _all())
    assert fp(m.value) == fp(key)
