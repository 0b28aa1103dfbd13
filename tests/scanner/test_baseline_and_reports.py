"""Baseline files, JSON and SARIF reports: never a secret, always valid."""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import pytest

from keyguard.errors import ScanError
from keyguard.scanner import baseline as bl
from keyguard.scanner.gitsrc import scan_history
from keyguard.scanner.reporters import render_json, render_text
from keyguard.scanner.sarif import render_sarif, to_sarif
from scanner.gitutil import git
from scanner.keygen import openai_key, virtual_key

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())


@pytest.fixture
def tree(tmp_path, rng):
    keys = [openai_key(rng), openai_key(rng, "user"), virtual_key(rng)]
    (tmp_path / "a.py").write_text(f"A = '{keys[0]}'\nB = '{keys[1]}'\n")
    (tmp_path / "b.yaml").write_text(f"k: {keys[2]}\n")
    return tmp_path, keys


def _scan(scanner, root):
    return scanner.scan_files(root, ["a.py", "b.yaml"])


def test_baseline_hides_known_findings_and_reports_new_ones(tree, scanner, rng, tmp_path):
    root, keys = tree
    report = _scan(scanner, root)
    base = bl.Baseline()
    base.add(report.findings)
    path = tmp_path / "baseline.json"
    bl.save(base, path)
    text = path.read_text()
    for key in keys:
        assert key not in text and key[-4:] not in text.replace(base.salt.hex(), "")
    loaded = bl.load(path)
    assert loaded.salt == base.salt and all(loaded.knows(f) for f in report.findings)
    new_key = openai_key(rng, "admin")
    (root / "a.py").write_text((root / "a.py").read_text() + f"C = '{new_key}'\n")
    fresh = [f for f in _scan(scanner, root).findings if not loaded.knows(f)]
    assert [f.format for f in fresh] == ["openai-admin"]


def test_baseline_is_keyed_per_file(tree, scanner):
    root, _ = tree
    findings = _scan(scanner, root).findings
    one, two = bl.Baseline(), bl.Baseline()
    one.add(findings)
    two.add(findings)
    assert {h for h, _ in one.entries}.isdisjoint({h for h, _ in two.entries})


def test_baseline_rejects_garbage_and_future_versions(tmp_path):
    bad = tmp_path / "b.json"
    bad.write_text("not json")
    with pytest.raises(ScanError):
        bl.load(bad)
    bad.write_text(json.dumps({"version": 99, "salt": "00" * 32, "entries": []}))
    with pytest.raises(ScanError, match="newer"):
        bl.load(bad)
    with pytest.raises(ScanError):
        bl.load(tmp_path / "missing.json")


def test_baseline_upgrade_steps_run_in_order(monkeypatch):
    monkeypatch.setattr(bl, "VERSION", 2)
    monkeypatch.setitem(bl.UPGRADES, 1, lambda d: {**d, "version": 2})
    doc = {"version": 1, "salt": "ab" * 32, "entries": []}
    assert bl.Baseline.from_json(doc).salt == bytes.fromhex("ab" * 32)


def test_json_and_text_never_contain_keys(tree, scanner):
    root, keys = tree
    report = _scan(scanner, root)
    out = io.StringIO()
    render_json(report, out)
    doc = json.loads(out.getvalue())
    assert doc["summary"]["findings"] == 3
    assert {f["format"] for f in doc["findings"]} == {
        "openai-project",
        "openai-user-legacy",
        "keyguard-virtual-key",
    }
    for text in (out.getvalue(), _text(report), _text(report, color=True), _sarif(report)):
        for key in keys:
            assert key not in text
            assert key[3:20] not in text  # no long fragment either


def _text(report, color=False):
    out = io.StringIO()
    render_text(report, out, color=color)
    return out.getvalue()


def _sarif(report):
    out = io.StringIO()
    render_sarif(report, out)
    return out.getvalue()


def test_sarif_is_valid_sarif_2_1_0(tree, scanner):
    root, _ = tree
    report = _scan(scanner, root)
    doc = to_sarif(report)
    jsonschema.validate(doc, SCHEMA)
    run = doc["runs"][0]
    assert [r["ruleId"] for r in run["results"]] == [
        "openai-project",
        "openai-user-legacy",
        "keyguard-virtual-key",
    ]
    for result in run["results"]:
        rule = run["tool"]["driver"]["rules"][result["ruleIndex"]]
        assert rule["id"] == result["ruleId"]
        loc = result["locations"][0]["physicalLocation"]
        assert loc["region"]["startLine"] >= 1


def test_sarif_of_history_and_empty_scans_is_valid(repo, scanner, rng):
    (repo / "x.txt").write_text(f"{openai_key(rng)}\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "x")
    doc = to_sarif(scan_history(scanner, repo))
    jsonschema.validate(doc, SCHEMA)
    assert doc["runs"][0]["results"][0]["properties"]["commit"]
    jsonschema.validate(to_sarif(scanner.scan_files(repo, [])), SCHEMA)


def test_text_report_groups_by_file_and_explains_history(repo, scanner, rng):
    (repo / "x.txt").write_text(f"{openai_key(rng)}\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "x")
    text = _text(scan_history(scanner, repo))
    assert "x.txt\n" in text and "rotate" in text and "filter-repo" in text
    out = io.StringIO()
    render_json(scan_history(scanner, repo), out)
    assert "filter-repo" in json.loads(out.getvalue())["guidance"][0]
