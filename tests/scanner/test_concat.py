"""Keys split over string literals joined with an operator or by adjacency, in source code.

PYTEST_DONT_REWRITE: pytest's assertion introspection would show the arguments of calls in a
failing assert (``fp(key)``, a source text holding a key's pieces); plain asserts show nothing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import pytest

from keyguard.domain.keys import fingerprint as fp
from keyguard.scanner import baseline as bl
from keyguard.scanner.concat import might_hold
from keyguard.scanner.detectors import load_detectors
from keyguard.scanner.engine import scan_bytes, scan_text
from keyguard.scanner.fix.fixer import fix_findings
from keyguard.scanner.fix.pyrewrite import rewrite_python
from keyguard.scanner.reporters import render_json, render_text
from keyguard.scanner.sarif import to_sarif
from scanner.keygen import admin_token, hard_negatives, minified_js, openai_key, virtual_key

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())

# values are compared by fingerprint: a failing assertion never prints a key-shaped value


def _all():
    return load_detectors(plugins=False)


def _split(key: str, *cuts: int) -> list[str]:
    bounds = [0, *cuts, len(key)]
    return [key[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _found(text: str) -> list[tuple[str, int, int, str]]:
    return [(fp(m.value), m.line, m.column, m.encoding) for m in scan_bytes(text.encode(), _all())]


# (file name, source template): {p0}, {p1}, {p2} are the pieces; the key starts at the
# first "sk-"/"kg_" of the source, on the line and column the test computes
SHAPES = [
    ("app.py", 'KEY = "{p0}" + "{p1}" + "{p2}"\n'),
    (
        "app.py",
        'client = OpenAI(\n    api_key=(\n        "{p0}"\n        "{p1}"\n'
        '        "{p2}"\n    )\n)\n',
    ),
    ("app.py", "KEY = '{p0}' \\\n    '{p1}' \\\n    '{p2}'\n"),
    ("app.py", 'KEY = ("{p0}"  # first part\n       "{p1}"  # second\n       "{p2}")\n'),
    ("app.py", 'KEY = r"{p0}" + u"{p1}" + "{p2}"\n'),
    ("app.js", 'const key = "{p0}" +\n  "{p1}" +\n  "{p2}";\n'),
    ("app.ts", "const key: string = '{p0}'\n  + '{p1}'\n  + `{p2}`;\n"),
    ("App.java", 'String key = "{p0}" + "{p1}"\n    + "{p2}";\n'),
    ("App.cs", 'var key = @"{p0}" + "{p1}" + "{p2}";\n'),
    ("main.go", 'key := "{p0}" +\n\t"{p1}" + `{p2}`\n'),
    ("app.rb", 'key = "{p0}" \\\n  "{p1}" + "{p2}"\n'),
    ("main.c", 'const char *key = "{p0}"\n                  "{p1}"\n                  "{p2}";\n'),
    ("init.lua", "local key = '{p0}' .. '{p1}' .. '{p2}'\n"),
    ("index.php", "$key = '{p0}' . '{p1}' . \"{p2}\";\n"),
    ("q.sql", "SELECT '{p0}' || '{p1}' || '{p2}';\n"),
    ("mod.vb", 'Dim key = "{p0}" & "{p1}" & "{p2}"\n'),
    ("run.sh", 'KEY="{p0}""{p1}"\'{p2}\'\n'),
]


def _where(text: str) -> tuple[int, int]:
    start = min(i for i in (text.find("sk-"), text.find("kg_"), text.find("kga_")) if i >= 0)
    line_start = text.rfind("\n", 0, start) + 1
    return text.count("\n", 0, start) + 1, start - line_start + 1


@pytest.mark.parametrize(("name", "template"), SHAPES)
@pytest.mark.parametrize("kind", ["proj", "user-legacy", "virtual", "admin-token"])
def test_a_split_key_is_found_in_every_language(tmp_path, scanner, rng, name, template, kind):
    make = {
        "proj": lambda: openai_key(rng, "proj"),
        "user-legacy": lambda: "sk-" + openai_key(rng, "user")[3:],
        "virtual": lambda: virtual_key(rng),
        "admin-token": lambda: admin_token(rng),
    }[kind]
    key = make()
    n = len(key)
    # cut anywhere after the prefix: inside the marker, next to it, near either end
    cut1 = rng.randrange(5, n // 2)
    cut2 = rng.randrange(cut1 + 1, n - 1)
    p0, p1, p2 = _split(key, cut1, cut2)
    text = template.format(p0=p0, p1=p1, p2=p2)
    (tmp_path / name).write_text(text)
    [f] = scanner.scan_files(tmp_path, [name]).findings
    assert fp(f.secret.reveal()) == fp(key)
    assert (f.line, f.column) == _where(text)
    assert f.encoding == "concatenated"
    assert f.confidence == "high"


def test_the_split_may_fall_inside_the_marker_or_next_to_it(rng):
    key = openai_key(rng)
    marker = key.index("T3BlbkFJ")
    for cut in (marker - 1, marker, marker + 3, marker + 8, marker + 9, 4, len(key) - 1):
        a, b = _split(key, cut)
        assert _found(f'k = "{a}" + "{b}"\n') == [(fp(key), 1, 6, "concatenated")], cut


def test_a_whole_key_with_something_glued_on_is_the_plain_key(rng):
    key = openai_key(rng)
    for text in (f'url = "{key}" + "_suffix"\n', f'h = "{key}" + "-x"\n'):
        assert _found(text) == [(fp(key), 1, text.index('"') + 2, "utf-8")]
    [m] = scan_text(f'auth = "Bearer {key}" + "/v1"\n', _all())
    assert m.encoding == "utf-8"


def test_a_key_prefix_joined_to_non_key_text_is_not_reported(rng):
    key = openai_key(rng)
    a, b = _split(key, 60)
    negatives = [
        f'k = "{a}" + name + "{b}"\n',  # a variable in between: not literal joining
        f'k = "{a}", "{b}"\n',  # a tuple, not a concatenation
        f'k = ["{a}",\n     "{b}"]\n',
        f'k = "{a}" + "{b[:10]}.{b[10:]}"\n',  # the second literal breaks the key
        f'k = "task-{a[3:]}" + "{b}"\n',  # no key prefix at a word boundary
        f'k = "{a}";\nj = "{b}"\n',
    ]
    for text in negatives:
        assert _found(text) == [], negatives.index(text)


def test_split_fakes_and_hard_negatives_are_not_reported(rng):
    for value in hard_negatives(rng):
        for cut in (5, len(value) // 2, len(value) - 2):
            if 0 < cut < len(value):
                a, b = value[:cut], value[cut:]
                assert scan_text(f'x = "{a}" + "{b}"\ny = ("{a}"\n     "{b}")\n', _all()) == []


def test_prefilter_rejects_ordinary_code(rng):
    code = (
        'task-runner = "abc" + "def"\nimport pkg_resources\nx = "sk-" + y\n'
        'mask = "desk-" + top\ns = "kg_" + str(n)\nt = f"sk-{x}" + "y"\n'
    )
    assert not might_hold(code.encode())
    assert not might_hold(minified_js(rng).encode())
    key = openai_key(rng)
    assert might_hold(f'k = "{key[:30]}" + "{key[30:]}"'.encode())
    assert might_hold(f'k = ("{key[:30]}"\n   "{key[30:]}")'.encode())


def test_utf16_source_and_allow_marker(tmp_path, scanner, rng):
    key = openai_key(rng)
    a, b = _split(key, 70)
    (tmp_path / "w.cs").write_bytes(f'var k = "{a}" +\n  "{b}";\n'.encode("utf-16"))
    [f] = scanner.scan_files(tmp_path, ["w.cs"]).findings
    assert (fp(f.secret.reveal()), f.line, f.encoding) == (fp(key), 1, "concatenated")
    # the allow marker goes on the line where the key starts
    assert _found(f'k = ("{a}"  # keyguard: allow\n     "{b}")\n') == []
    assert len(_found(f'k = ("{a}"\n     "{b}")  # keyguard: allow\n')) == 1


def test_reports_and_baseline(tmp_path, scanner, rng):
    keys = [openai_key(rng, "svcacct"), virtual_key(rng)]
    a, b = _split(keys[0], 90)
    c, d = _split(keys[1], 30)
    (tmp_path / "app.js").write_text(f'const a = "{a}" +\n  "{b}";\nconst v = "{c}" + "{d}";\n')
    report = scanner.scan_files(tmp_path, ["app.js"])
    assert [f.encoding for f in report.findings] == ["concatenated", "concatenated"]
    out = io.StringIO()
    render_json(report, out)
    doc = json.loads(out.getvalue())
    assert [f["encoding"] for f in doc["findings"]] == ["concatenated", "concatenated"]
    sarif = to_sarif(report)
    jsonschema.validate(sarif, SCHEMA)
    results = sarif["runs"][0]["results"]
    assert [r["properties"]["encoding"] for r in results] == ["concatenated"] * 2
    assert "concatenated string literals" in results[0]["message"]["text"]
    text = io.StringIO()
    render_text(report, text)
    assert "concatenated" in text.getvalue()
    printed = out.getvalue() + json.dumps(sarif) + text.getvalue()
    for secret in [*keys, a, b, c, d]:
        assert secret not in printed
    base = bl.Baseline()
    base.add(report.findings)
    path = tmp_path / "baseline.json"
    bl.save(base, path)
    loaded = bl.load(path)
    assert all(loaded.knows(f) for f in scanner.scan_files(tmp_path, ["app.js"]).findings)


def test_history_finds_split_keys_on_one_or_several_added_lines(repo, scanner, rng):
    from keyguard.scanner.gitsrc import scan_history
    from scanner.gitutil import git

    k1, k2, k3, k4 = (openai_key(rng) for _ in range(4))
    marker = k1.index("T3BlbkFJ")
    a1, b1 = _split(k1, marker + 4)  # the marker itself is cut: no line holds it whole
    a2, b2, c2 = _split(k2, 30, 120)
    a3, b3 = _split(k3, 70)
    a4, b4 = _split(k4, 50)
    (repo / "a.js").write_text("// app\nconst x = 1;\n")
    git(repo, "add", "a.js")
    git(repo, "commit", "-qm", "init")
    (repo / "a.js").write_text(
        f'// app\nconst k = "{a1}" + "{b1}";\nconst x = 1;\n'
        f'const j = "{a2}"\n  + "{b2}"\n  + "{c2}";\n'
    )
    (repo / "b.py").write_text(f'K = (\n    "{a3}"\n    "{b3}"\n)\n')
    (repo / "c.py").write_text(f'K = "{a4}" \\\n    "{b4}"\n')
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "keys")
    added = git(repo, "rev-parse", "HEAD")
    (repo / "b.py").write_text("K = None\n")  # removed again: still in history
    git(repo, "commit", "-qam", "rm")
    found = {f.fingerprint: f for f in scan_history(scanner, repo).findings}
    assert {fp_: (f.path, f.line, f.encoding, f.commit) for fp_, f in found.items()} == {
        fp(k1): ("a.js", 2, "concatenated", added),
        fp(k2): ("a.js", 4, "concatenated", added),
        fp(k3): ("b.py", 2, "concatenated", added),
        fp(k4): ("c.py", 1, "concatenated", added),
    }
    assert found[fp(k3)].column == 6


def test_many_random_splits_and_joiners(rng):
    joiners = [" + ", "+", " +\n    ", "\n  + ", " ", "\n    ", " \\\n  ", " .. ", " . "]
    keys = [openai_key(rng, k) for k in ("proj", "svcacct", "admin", "user")]
    keys += [virtual_key(rng), admin_token(rng)]
    for _ in range(60):
        key = rng.choice(keys)
        cuts = sorted(rng.sample(range(4, len(key)), rng.randint(1, 5)))
        quote = rng.choice("\"'")
        parts = [f"{quote}{p}{quote}" for p in _split(key, *cuts)]
        text = "x = (" + "".join(p + rng.choice(joiners) for p in parts[:-1]) + parts[-1] + ")\n"
        assert [fp(m.value) for m in scan_text(text, _all())] == [fp(key)]


# --- keyguard fix ------------------------------------------------------------------------


def _fix(repo, scanner, **kw):
    from keyguard.scanner.walk import list_files

    findings = scanner.scan_files(repo, list_files(repo)).findings
    return findings, fix_findings(repo, findings, **kw)


def test_fix_replaces_the_whole_python_concatenation(repo, scanner, rng):
    k1, k2, k3 = openai_key(rng), openai_key(rng, "admin"), openai_key(rng, "svcacct")
    a1, b1 = _split(k1, 50)
    a2, b2, c2 = _split(k2, 30, 120)
    a3, b3 = _split(k3, 77)
    src = (
        '"""App."""\n\n'
        f'OPENAI_API_KEY = "{a1}" + "{b1}"  # keep me\n'
        f'client = OpenAI(\n    api_key=(\n        "{a2}"\n        "{b2}" "{c2}"\n    ),\n)\n'
        f'other = os.getenv("MY_OPENAI_KEY", "{a3}" \\\n    "{b3}")\n'
    )
    (repo / "app.py").write_text(src)
    findings, result = _fix(repo, scanner)
    assert [f.encoding for f in findings] == ["concatenated"] * 3
    new = (repo / "app.py").read_text()
    compile(new, "app.py", "exec")
    assert new.endswith(
        'OPENAI_API_KEY = os.environ["OPENAI_API_KEY"]  # keep me\n'
        'client = OpenAI(\n    api_key=os.environ["OPENAI_ADMIN_KEY"],\n)\n'
        'other = os.environ["MY_OPENAI_KEY"]\n'
    )
    assert new.count("import os\n") == 1
    assert result.unfixed == 0
    env = (repo / ".env").read_text()
    for name, key in (("OPENAI_API_KEY", k1), ("OPENAI_ADMIN_KEY", k2), ("MY_OPENAI_KEY", k3)):
        assert f"{name}={key}\n" in env
    assert scanner.scan_files(repo, ["app.py"]).findings == []


def test_fix_leaves_a_longer_concatenation_alone_and_says_so(repo, scanner, rng):
    key = openai_key(rng)
    a, b = _split(key, 50)
    src = f'auth = "Bearer " + "{a}" + "{b}"\nraw = b"{a}" b"{b}"\n'
    (repo / "app.py").write_text(src)
    (repo / "app.js").write_text(f'const k = "{a}" +\n  "{b}";\n')
    _, result = _fix(repo, scanner)
    assert (repo / "app.py").read_text() == src  # unchanged
    assert (repo / "app.js").read_text() == f'const k = "{a}" +\n  "{b}";\n'
    guidance = [g for f in result.files for g in f.guidance]
    assert any("app.py:1: key inside a longer string concatenation" in g for g in guidance)
    assert any(g.startswith("app.py:2: key left in place") for g in guidance)
    assert any("app.js:1 (the key is split over joined string literals" in g for g in guidance)
    assert result.unfixed == 3
    assert key not in repr(result) and a not in " ".join(guidance)


def test_rewrite_python_exact_concatenations_only(rng):
    key = openai_key(rng)
    a, b = _split(key, 50)
    cases = {
        f'k = "{a}" + "{b}"\n': 'k = os.environ["OPENAI_API_KEY"]\n',
        f'k = "{a}" + "{b}" + suffix\n': 'k = os.environ["OPENAI_API_KEY"] + suffix\n',
        f'k = "" "{a}" "{b}"\n': 'k = os.environ["OPENAI_API_KEY"]\n',
        f'd = {{"api_key": ("{a}"\n    "{b}")}}\n': (
            'd = {"api_key": os.environ["OPENAI_API_KEY"]}\n'
        ),
    }
    for src, want in cases.items():
        result = rewrite_python(src, {key}, lambda v, h: "OPENAI_API_KEY")
        assert result.code == "import os\n" + want, want
        assert [line for line, _ in result.replaced] == [1]
    for src in (f'k = f"{a}" "{b}"\n', f'os.environ["X"] = "{a}" "{b}"\n'):
        result = rewrite_python(src, {key}, lambda v, h: "OPENAI_API_KEY")
        assert not result.changed and len(result.unfixable) <= 1


def test_the_first_pass_finds_a_join_after_anchors_and_near_misses(rng):
    from keyguard.scanner.engine import select_joined

    plain, split = openai_key(rng), virtual_key(rng)
    a, b = _split(split, 20)
    noise = "import pkg_resources\n" * 100 + f"PLAIN = '{plain}'\n" + "task-x = 1\n" * 50
    assert select_joined(_all(), noise.encode())[1] is False
    for text in (noise + f'k = "{a}" + "{b}"\n', f'k = "{a}" + "{b}"\n' + noise):
        active, joined = select_joined(_all(), text.encode())
        assert joined and "openai" in [d.name for d in active]
        assert sorted(fp(m.value) for m in scan_bytes(text.encode(), _all())) == sorted(
            [fp(plain), fp(split)]
        )


def test_dry_run_diff_shows_no_piece_of_a_split_key(repo, scanner, rng):
    key = openai_key(rng)
    pieces = _split(key, 9, 60, 100, 150)
    src = "import openai\n\nKEY = (\n" + "".join(f'    "{p}"\n' for p in pieces) + ")\n"
    (repo / "app.py").write_text(src)
    _, result = _fix(repo, scanner, dry_run=True)
    [fix] = result.files
    assert (repo / "app.py").read_text() == src  # dry run: nothing written
    assert 'KEY = os.environ["OPENAI_API_KEY"]' in fix.diff
    assert "<part of sk-proj-…" in fix.diff
    for piece in pieces:
        assert piece not in fix.diff
    assert "import openai" in fix.diff and "KEY" in fix.diff  # ordinary code is left as is
