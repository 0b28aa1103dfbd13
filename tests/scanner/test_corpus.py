"""A labelled corpus, generated at test time: every key format in every context must be found
(100% recall) and none of the hard negatives may be reported (zero false positives)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from keyguard.domain.keys import fingerprint
from keyguard.scanner.runner import Scanner
from scanner.keygen import all_positive_keys, hard_negatives, minified_js

#: context name -> (file name, template); KEY is replaced by the key
CONTEXTS: dict[str, tuple[str, str]] = {
    "py-double": ("app.py", 'openai.api_key = "KEY"\n'),
    "py-single": ("client.py", "client = OpenAI(api_key='KEY')\n"),
    "dotenv": (".env.example", "OPENAI_API_KEY=KEY\n"),
    "yaml": ("config.yaml", "openai:\n  key: KEY\n"),
    "json": ("settings.json", '{"api_key": "KEY"}\n'),
    "json-escaped": ("payload.json", '{"body": "{\\"key\\": \\"KEY\\"}"}\n'),
    "json-newline-escape": ("log.json", '{"msg": "line one\\nKEY\\nline three"}\n'),
    "toml": ("pyproject.toml", '[tool.x]\nkey = "KEY"\n'),
    "dockerfile": ("Dockerfile", "FROM python:3.12\nENV OPENAI_API_KEY=KEY\n"),
    "shell": ("deploy.sh", 'export OPENAI_API_KEY="KEY"\n'),
    "markdown-code": ("README.md", "Use `KEY` to start.\n"),
    "markdown-emphasis": ("NOTES.md", "The key was _KEY_ all along.\n"),
    "html": ("index.html", "<code>KEY</code>\n"),
    "xml-attr": ("conf.xml", "<key value='KEY'/>\n"),
    "url-query": ("links.txt", "https://example.invalid/v1?api_key=KEY&x=1\n"),
    "url-path": ("routes.txt", "https://example.invalid/keys/KEY/usage\n"),
    "url-percent-quote": ("q.txt", "https://example.invalid/?q=%22KEY%22\n"),
    "url-percent-assign": ("r.txt", "https://example.invalid/?cfg=key%3DKEY\n"),
    "non-ascii-no-space": ("zh.txt", "密钥KEY。谢谢\n"),
    "bearer-log": ("server.log", "2024-01-01 Authorization: Bearer KEY\n"),
    "parens": ("notes.txt", "(KEY), [KEY]; KEY,\n"),
    "tab-separated": ("data.tsv", "name\tKEY\tend\n"),
    "no-final-newline": ("tail.cfg", "key=KEY"),
    "no-extension": ("secrets", "KEY\n"),
    "dotfile": (".npmrc", "//registry/:_authToken=KEY\n"),
    "js": ("web.js", "const k = `KEY`;\n"),
    "rust-raw": ("main.rs", 'let k = r#"KEY"#;\n'),
}


def _write_corpus(root: Path, keys: dict[str, str], rng: random.Random) -> set[tuple[str, str]]:
    """Write one file per (key, context); return the expected (path, fingerprint) pairs."""
    expected = set()
    for label, key in keys.items():
        for ctx, (name, template) in CONTEXTS.items():
            rel = f"{label}/{ctx}/{name}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(template.replace("KEY", key), encoding="utf-8")
            expected.add((rel, fingerprint(key)))
        special = {
            "crlf.txt": ("a = 1\r\nkey = KEY\r\n", "utf-8"),
            "utf16le.txt": ("\ufeffkey = KEY\r\n", "utf-16-le"),
            "utf16be.txt": ("\ufeffkey = KEY\n", "utf-16-be"),
            "utf16-bom.ps1": ("$k = 'KEY'\n", "utf-16"),
            "url-encoded.txt": (
                "u?k=" + key.replace("-", "%2D").replace("_", "%5F") + "\n",
                "utf-8",
            ),
        }
        for name, (text, encoding) in special.items():
            rel = f"{label}/special/{name}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(text.replace("KEY", key).encode(encoding))
            expected.add((rel, fingerprint(key)))
        # minified code is written around the key, not templated (it may contain "KEY")
        rel = f"{label}/special/bundle.min.js"
        bundle = minified_js(rng, 150_000) + f'"{key}"' + minified_js(rng, 50_000)
        (root / rel).write_text(bundle, encoding="utf-8")
        expected.add((rel, fingerprint(key)))
        nb = {
            "cells": [
                {"cell_type": "markdown", "metadata": {}, "source": ["# demo"]},
                {
                    "cell_type": "code",
                    "metadata": {},
                    "execution_count": 1,
                    "outputs": [],
                    "source": ["import openai\n", f'openai.api_key = "{key}"\n'],
                },
            ],
            "metadata": {},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        rel = f"{label}/special/demo.ipynb"
        (root / rel).write_text(json.dumps(nb, indent=1), encoding="utf-8")
        expected.add((rel, fingerprint(key)))
    return expected


def _write_negatives(root: Path, rng: random.Random) -> None:
    neg = root / "negatives"
    neg.mkdir()
    values = hard_negatives(rng)
    lines = []
    for i, value in enumerate(values):
        lines += [f'key_{i} = "{value}"', f"K{i}={value}", f"url?k={value}&", f"  `{value}`"]
    (neg / "placeholders.py").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (neg / "bundle.min.js").write_text(minified_js(rng, 300_000), encoding="utf-8")
    (neg / "docs.md").write_text(
        "Set `OPENAI_API_KEY=sk-...` (looks like sk-proj-…abcd) or sk-your-key-here.\n"
        "Stripe keys start with sk_live_ and sk_test_; Anthropic's with sk-ant-.\n",
        encoding="utf-8",
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    rng = random.Random("keyguard-corpus")
    root = tmp_path_factory.mktemp("corpus")
    keys = all_positive_keys(rng)
    expected = _write_corpus(root, keys, rng)
    _write_negatives(root, rng)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return root, files, expected, keys


@pytest.mark.parametrize("jobs", [1, 2])
def test_full_recall_and_no_false_positives(corpus, detectors, jobs):
    root, files, expected, _ = corpus
    report = Scanner(detectors, jobs=jobs).scan_files(root, files)
    found = {(f.path, f.fingerprint) for f in report.findings}
    missed = expected - found
    extra = found - expected
    assert not missed, sorted(missed)[:10]
    assert not extra, sorted(extra)[:10]
    assert not report.skipped


def test_each_finding_has_format_and_confidence(corpus, detectors):
    root, files, _, keys = corpus
    report = Scanner(detectors, jobs=1).scan_files(root, files)
    by_fp = {fingerprint(k): label for label, k in keys.items()}
    formats = {}
    for f in report.findings:
        assert f.confidence in {"high", "medium"}
        formats.setdefault(by_fp[f.fingerprint], set()).add((f.format, f.confidence))
    assert formats["proj"] == {("openai-project", "high")}
    assert formats["early-proj"] == {("openai-project", "high")}
    assert formats["svcacct"] == {("openai-service-account", "high")}
    assert formats["svcacct-74"] == {("openai-service-account", "high")}
    assert formats["admin"] == {("openai-admin", "high")}
    assert formats["user"] == {("openai-user-legacy", "high")}
    assert formats["none-user"] == {("openai-user", "high")}
    assert formats["virtual"] == {("keyguard-virtual-key", "high")}
    assert formats["admin-token"] == {("keyguard-admin-token", "high")}
    assert formats["future"] == {("openai-api-key", "medium")}


def test_line_and_column_are_exact(tmp_path, scanner, rng):
    from scanner.keygen import openai_key

    key = openai_key(rng)
    (tmp_path / "a.py").write_text(f"x = 1\n\nKEY = 'é{key}'\n", encoding="utf-8")
    [f] = scanner.scan_files(tmp_path, ["a.py"]).findings
    assert (f.line, f.column) == (3, 9)


def test_allow_marker_exempts_the_line(tmp_path, scanner, rng):
    from scanner.keygen import openai_key

    key = openai_key(rng)
    (tmp_path / "t.py").write_text(
        f'FAKE = "{key}"  # keyguard: allow\nREAL = "{key}"\n', encoding="utf-8"
    )
    [f] = scanner.scan_files(tmp_path, ["t.py"]).findings
    assert f.line == 2
