"""--history reads the blobs of files git shows as binary and scans the UTF-16 ones.

PYTEST_DONT_REWRITE: pytest's assertion introspection would show the arguments of calls in a
failing assert (``fp(key)``, a source text holding a key's pieces); plain asserts show nothing.
"""

from __future__ import annotations

import base64

from keyguard.domain.keys import fingerprint as fp
from keyguard.scanner.gitsrc import scan_history
from keyguard.scanner.runner import Scanner
from scanner.gitutil import git
from scanner.keygen import openai_key, virtual_key

# values are compared by fingerprint: a failing assertion never prints a key-shaped value


def _commit(repo, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


def test_utf16_files_are_found_in_history(repo, scanner, rng):
    k1, k2, k3 = openai_key(rng), virtual_key(rng), openai_key(rng, "admin")
    (repo / "README.md").write_text("hello\n")
    _commit(repo, "init")
    # Windows tools write UTF-16 LE with a BOM; a BE file without a BOM is found by its NULs
    (repo / "settings.ps1").write_text(f"# config\r\n$env:OPENAI_API_KEY = '{k1}'\r\n", "utf-16")
    (repo / "dir with space").mkdir()
    (repo / "dir with space" / "notes é.txt").write_bytes(f"a\nb\nkey={k2}\n".encode("utf-16-be"))
    (repo / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + k3.encode())
    added = _commit(repo, "add settings")
    (repo / "settings.ps1").unlink()
    (repo / "dir with space" / "notes é.txt").unlink()
    _commit(repo, "remove them")
    report = scan_history(scanner, repo)
    found = {f.fingerprint: f for f in report.findings}
    assert set(found) == {fp(k1), fp(k2)}  # the PNG is binary: not read as text
    f1, f2 = found[fp(k1)], found[fp(k2)]
    assert (f1.path, f1.line, f1.column, f1.commit, f1.encoding) == (
        "settings.ps1",
        2,
        len("$env:OPENAI_API_KEY = '") + 1,
        added,
        "utf-16",
    )
    assert (f2.path, f2.line, f2.commit, f2.encoding) == (
        "dir with space/notes é.txt",
        3,
        added,
        "utf-16",
    )
    assert f1.author_date is not None and f1.source == "history"
    assert [(s.path, s.reason) for s in report.skipped] == [("logo.png", "binary")]


def test_each_key_is_reported_at_the_oldest_commit_that_added_it(repo, scanner, rng):
    early, late, text_first = openai_key(rng), openai_key(rng, "svcacct"), virtual_key(rng)
    (repo / "a.txt").write_text(f"x = '{text_first}'\n")
    (repo / "w.ini").write_text(f"[k]\nearly={early}\n", "utf-16")
    first = _commit(repo, "one")
    # later: the UTF-16 file gains a key and also holds the text file's key; the text file
    # gets the UTF-16 file's first key
    (repo / "w.ini").write_text(f"[k]\nearly={early}\nlate={late}\nt={text_first}\n", "utf-16")
    (repo / "b.txt").write_text(f"copy = '{early}'\n")
    second = _commit(repo, "two")
    found = {f.fingerprint: f for f in scan_history(scanner, repo).findings}
    assert len(found) == 3
    assert (found[fp(early)].path, found[fp(early)].commit, found[fp(early)].line) == (
        "w.ini",
        first,
        2,
    )
    assert (found[fp(late)].path, found[fp(late)].commit, found[fp(late)].line) == (
        "w.ini",
        second,
        3,
    )
    assert (found[fp(text_first)].path, found[fp(text_first)].commit) == ("a.txt", first)


def test_a_key_first_in_text_then_in_utf16_keeps_the_text_commit(repo, scanner, rng):
    key = openai_key(rng)
    (repo / "app.py").write_text(f"KEY = '{key}'\n")
    first = _commit(repo, "text")
    (repo / "w.txt").write_text(f"KEY={key}\n", "utf-16")
    _commit(repo, "utf16")
    [f] = scan_history(scanner, repo).findings
    assert (f.path, f.commit, f.encoding) == ("app.py", first, "utf-8")


def test_encoded_and_concatenated_keys_in_utf16_history(repo, scanner, rng):
    k1, k2 = openai_key(rng), openai_key(rng, "svcacct")
    encoded = base64.b64encode(k1.encode()).decode()
    (repo / "secret.yaml").write_text(f"data:\n  K: {encoded}\n", "utf-16")
    (repo / "App.cs").write_text(f'var k = "{k2[:60]}" +\r\n    "{k2[60:]}";\r\n', "utf-16")
    _commit(repo, "add")
    found = {f.fingerprint: f for f in scan_history(scanner, repo).findings}
    assert (found[fp(k1)].line, found[fp(k1)].encoding) == (2, "base64")
    assert (found[fp(k2)].line, found[fp(k2)].encoding) == (1, "concatenated")


def test_binary_attribute_and_size_limit(repo, rng):
    key, big = openai_key(rng), openai_key(rng)
    (repo / ".gitattributes").write_text("*.cfg -diff\n")
    (repo / "app.cfg").write_text(f"key={key}\n")  # UTF-8 text that git shows as binary
    (repo / "huge.txt").write_text("x\n" * 3000 + f"key={big}\n", "utf-16")
    _commit(repo, "add")
    report = scan_history(Scanner(jobs=1, max_file_size=4096), repo)
    assert [(f.path, f.fingerprint) for f in report.findings] == [("app.cfg", fp(key))]
    assert [(s.path, s.reason) for s in report.skipped] == [("huge.txt", "larger than 4096 bytes")]


def test_the_same_blob_in_many_commits_is_read_once(repo, scanner, rng, monkeypatch):
    from keyguard.scanner import gitsrc

    key = openai_key(rng)
    (repo / "w.txt").write_text(f"KEY={key}\n", "utf-16")
    first = _commit(repo, "add")
    for n in range(3):  # delete and restore the same content: the same blob each time
        (repo / "w.txt").unlink()
        _commit(repo, f"rm {n}")
        (repo / "w.txt").write_text(f"KEY={key}\n", "utf-16")
        _commit(repo, f"restore {n}")
    asked: list[list[str]] = []
    real = gitsrc.read_blobs

    def spy(repo_, blobs):
        asked.append(list(blobs))
        return real(repo_, blobs)

    monkeypatch.setattr(gitsrc, "read_blobs", spy)
    [f] = scan_history(scanner, repo).findings
    assert f.commit == first
    assert [len(b) for b in asked] == [1]


def test_blob_helpers(repo):
    from keyguard.scanner.gitblobs import blob_id, blob_sizes, read_blobs

    (repo / "a.bin").write_bytes(b"\x7fELF\x00\x01")
    (repo / "b.txt").write_text("hi\n")
    _commit(repo, "add")
    a, b = git(repo, "rev-parse", "HEAD:a.bin"), git(repo, "rev-parse", "HEAD:b.txt")
    missing = "0123456789" * 4
    assert blob_sizes(repo, [a, missing, b]) == {a: 6, b: 3}
    assert list(read_blobs(repo, [a, missing, b])) == [(a, b"\x7fELF\x00\x01"), (b, b"hi\n")]
    assert list(read_blobs(repo, [])) == [] and blob_sizes(repo, []) == {}
    section = f"diff --git a/x b/x\nnew file mode 100644\nindex {'0' * 40}..{a}\nBinary".encode()
    assert blob_id(section, len(section)) == a
    assert blob_id(b"diff --git a/x b/x\nBinary", 20) is None
    deleted = f"diff --git a/x b/x\nindex {a}..{'0' * 40}\nBinary".encode()
    assert blob_id(deleted, len(deleted)) is None
