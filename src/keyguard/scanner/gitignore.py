"""A small ``.gitignore`` matcher for trees that are not git repositories.

Inside a repository the walker asks git itself (``git ls-files --exclude-standard``), which is
exact. Outside one, this implements the common rules: comments and blank lines, ``!``
negation, a trailing ``/`` for directories only, patterns containing a ``/`` anchored to the
``.gitignore``'s directory, ``*``/``?``/``[…]`` within a path segment and ``**`` across segments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    """One pattern of one ``.gitignore``; ``base`` is its directory (posix, '' = root)."""

    base: str
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


def _translate(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def parse(text: str, base: str) -> list[Rule]:
    """Compile the rules of one ``.gitignore`` whose directory is ``base``."""
    rules = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        line = line.lstrip("/")
        body = _translate(line)
        regex = re.compile(body if anchored else f"(?:.*/)?{body}")
        rules.append(Rule(base, regex, negate, dir_only))
    return rules


class IgnoreMatcher:
    """Decides whether a path (posix, relative to the scan root) is ignored."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []

    def load(self, root: Path, rel_dir: str) -> None:
        """Read ``rel_dir/.gitignore`` (if any) when the walk enters ``rel_dir``."""
        path = root / rel_dir / ".gitignore" if rel_dir else root / ".gitignore"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        self.rules.extend(parse(text, rel_dir))

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Last matching rule wins, as in git."""
        verdict = False
        for rule in self.rules:
            if rule.dir_only and not is_dir:
                continue
            if rule.base:
                if not rel.startswith(rule.base + "/"):
                    continue
                sub = rel[len(rule.base) + 1 :]
            else:
                sub = rel
            if rule.regex.fullmatch(sub):
                verdict = not rule.negate
        return verdict
