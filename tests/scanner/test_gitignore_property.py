"""The fallback .gitignore matcher (used outside git repositories) agrees with git itself."""

from __future__ import annotations

import subprocess

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyguard.scanner.gitignore import IgnoreMatcher, parse

SEGMENT = st.sampled_from(["a", "b", "ab", "*", "a*", "?", "*b", "[ab]"])
PATTERN = st.builds(
    lambda neg, lead, segs, dbl, trail: (
        ("!" if neg else "")
        + ("/" if lead else "")
        + ("**/" if dbl else "")
        + "/".join(segs)
        + ("/" if trail else "")
    ),
    st.booleans(),
    st.booleans(),
    st.lists(SEGMENT, min_size=1, max_size=3),
    st.booleans(),
    st.booleans(),
)
PATH = st.lists(st.sampled_from(["a", "b", "ab", "ba", "c"]), min_size=1, max_size=4).map("/".join)


def _ours(rules_text: str, path: str) -> bool:
    m = IgnoreMatcher()
    m.rules = parse(rules_text, "")
    parts = path.split("/")
    # like the walk: an ignored directory is never entered
    for i in range(1, len(parts)):
        if m.ignored("/".join(parts[:i]), True):
            return True
    return m.ignored(path, False)


@settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    patterns=st.lists(PATTERN, min_size=1, max_size=4), paths=st.lists(PATH, min_size=1, max_size=6)
)
def test_matcher_agrees_with_git(tmp_path, patterns, paths):
    repo = tmp_path / "r"
    if not repo.exists():
        repo.mkdir()
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
    text = "\n".join(patterns) + "\n"
    (repo / ".gitignore").write_text(text)
    # files only: a path that is a prefix of another would have to be a directory
    files = sorted({p for p in paths if not any(q.startswith(p + "/") for q in paths)})
    out = subprocess.run(
        ["git", "-C", str(repo), "check-ignore", "--no-index", "--stdin", "-z"],
        input="\0".join(files) + "\0",
        capture_output=True,
        text=True,
    )
    theirs = {p for p in out.stdout.split("\0") if p}
    ours = {p for p in files if _ours(text, p)}
    assert ours == theirs, (text, files)
