"""``keyguard fix``: move hardcoded keys out of files, safely.

Order of operations, so that the key is never lost:

1. plan: scan, rewrite Python files in memory (libcst), choose variable names;
2. store every value (``.env`` appended and fsynced, or the vault through a :class:`SecretSink`);
3. replace each changed source file atomically (temp file in the same directory, fsync, rename,
   original mode kept);
4. make sure ``.env`` is ignored by git.

``dry_run`` stops after 1 and returns unified diffs in which every key is redacted.

A key found in a notebook cell *output* is never stored: no code reads it, and it has been
shown to whoever saw the notebook, so it must be rotated. The fixer replaces it in the output by
its redacted form instead (:func:`~keyguard.scanner.notebook.redact_outputs`) and says to
rotate it. Keys in notebook code get guidance, with the value stored, as in other files.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import libcst as cst

from keyguard.domain.secret import Secret
from keyguard.errors import ScanError
from keyguard.scanner.fix.envfile import EnvFile, ensure_ignored
from keyguard.scanner.fix.guidance import guidance
from keyguard.scanner.fix.pyrewrite import rewrite_python
from keyguard.scanner.model import Finding
from keyguard.scanner.notebook import redact_outputs

PYTHON_SUFFIXES = (".py", ".pyw")
NOTEBOOK_SUFFIX = ".ipynb"


class SecretSink(Protocol):
    """Where ``--to-vault`` stores values instead of ``.env`` (implemented at the CLI edge)."""

    def store(self, name: str, secret: Secret) -> str:
        """Store ``secret`` under ``name``; return a description (no key material)."""


@dataclass
class FileFix:
    """What happened (or would happen) to one file."""

    path: str
    replaced: list[tuple[int, str]] = field(default_factory=list)  # (line, env var)
    redacted_outputs: list[tuple[int, int | None]] = field(default_factory=list)  # (line, cell)
    guidance: list[str] = field(default_factory=list)
    diff: str = ""
    new_code: str | None = field(default=None, repr=False)  # may hold keys left in place


@dataclass
class FixResult:
    """The whole fix: per-file outcomes and what was stored where."""

    files: list[FileFix] = field(default_factory=list)
    env_file: str = ".env"
    stored: list[str] = field(default_factory=list)  # descriptions, never values
    planned_env_lines: list[str] = field(default_factory=list)
    planned_vault: list[str] = field(default_factory=list)  # names (redacted values)
    gitignore_updated: bool = False
    dry_run: bool = False

    @property
    def unfixed(self) -> int:
        """Number of places that need the user's hand."""
        return sum(len(f.guidance) for f in self.files)


def default_env_name(finding_format: str) -> str:
    """The variable a key of this format goes to by default."""
    return {
        "openai-admin": "OPENAI_ADMIN_KEY",
        "keyguard-admin-token": "KEYGUARD_ADMIN_TOKEN",
    }.get(finding_format, "OPENAI_API_KEY")


#: runs of key characters: a whole key, or a piece of one split over concatenated literals
_KEY_RUN = re.compile(r"[A-Za-z0-9_-]{4,}")


def _redact_all(text: str, values: Sequence[str]) -> str:
    """``text`` with every key redacted, and every piece of one (a key split over joined
    literals shows in a diff as pieces: any run of 4 or more key characters found in a key)."""

    def hide(run: re.Match[str]) -> str:
        piece = run.group(0)
        if any(value in piece for value in values):
            return piece  # a whole key (maybe glued to more): replaced below
        for value in values:
            if piece in value:
                return f"<part of {Secret(value, register=False).redacted}>"
        return piece

    text = _KEY_RUN.sub(hide, text)
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, Secret(value, register=False).redacted)
    return text


def _guide(f: Finding, env: EnvFile, env_label: str) -> str:
    """Guidance for a finding the fixer leaves to the user; its value is still stored."""
    name = env.name_for(f.secret.reveal(), None, default_env_name(f.format))
    return guidance(f, name, env_label)


def _plan_python(
    root: Path, rel: str, found: list[Finding], env: EnvFile, env_label: str, fix: FileFix
) -> None:
    path = root / rel
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            source = fh.read()
        formats = {f.secret.reveal(): f.format for f in found}
        result = rewrite_python(
            source,
            set(formats),
            lambda value, hint: env.name_for(value, hint, default_env_name(formats[value])),
        )
    except (UnicodeDecodeError, cst.ParserSyntaxError, OSError) as exc:
        for f in found:
            fix.guidance.append(
                f"{_guide(f, env, env_label)} [not rewritten: {type(exc).__name__}]"
            )
        return
    fix.replaced = result.replaced
    fix.guidance.extend(f"{rel}:{line}: {why}" for line, why in result.unfixable)
    done_lines = {line for line, _ in fix.replaced} | {line for line, _ in result.unfixable}
    for f in found:
        if f.encoding.startswith("base64"):  # the literal is the encoded form: not rewritten
            fix.guidance.append(_guide(f, env, env_label))
        elif f.line not in done_lines:
            fix.guidance.append(f"{rel}:{f.line}: key left in place: edit by hand")
    if result.changed:
        fix.new_code = result.code
        diff = difflib.unified_diff(
            source.splitlines(keepends=True),
            result.code.splitlines(keepends=True),
            fromfile=f"a/{rel}",
            tofile=f"b/{rel}",
        )
        fix.diff = _redact_all("".join(diff), list(formats))


def _plan_notebook(
    root: Path, rel: str, found: list[Finding], env: EnvFile, env_label: str, fix: FileFix
) -> None:
    """Code cells: guidance (value stored). Outputs: redact the key there, store nothing."""
    outputs = [f for f in found if f.part == "output"]
    fix.guidance.extend(_guide(f, env, env_label) for f in found if f.part != "output")
    if not outputs:
        return
    values = {f.secret.reveal() for f in outputs}
    try:
        with open(root / rel, encoding="utf-8", newline="") as fh:
            source = fh.read()
        planned = redact_outputs(source, values)
    except (UnicodeDecodeError, OSError):
        planned = None
    done: set[str] = set()
    if planned is not None:
        fix.new_code, done = planned
        diff = difflib.unified_diff(
            source.splitlines(keepends=True),
            fix.new_code.splitlines(keepends=True),
            fromfile=f"a/{rel}",
            tofile=f"b/{rel}",
        )
        fix.diff = _redact_all("".join(diff), [f.secret.reveal() for f in found])
    for f in outputs:
        if f.secret.reveal() in done:
            fix.redacted_outputs.append((f.line, f.cell))
        else:  # not in the output text as such (escaped, ...) or the file cannot be edited
            fix.guidance.append(guidance(f, default_env_name(f.format), env_label))


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename; keeps the file's mode."""
    mode = os.stat(path).st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.keyguard-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fix_findings(
    root: Path,
    findings: Sequence[Finding],
    *,
    env_path: Path | None = None,
    sink: SecretSink | None = None,
    dry_run: bool = False,
) -> FixResult:
    """Fix every finding (paths relative to ``root``); see the module docstring for order."""
    env_path = env_path or root / ".env"
    # a scanned repository may ship these as links (maybe dangling) to files outside it
    for path in (env_path, root / ".gitignore"):
        if path.is_symlink():
            raise ScanError(f"refusing to write through a symbolic link: {path}")
    env = EnvFile(env_path)
    env_label = os.path.relpath(env.path, root)
    result = FixResult(env_file=env_label, dry_run=dry_run)
    by_file: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        by_file[f.path].append(f)
    for rel, found in sorted(by_file.items()):
        fix = FileFix(rel)
        if rel.endswith(PYTHON_SUFFIXES):
            _plan_python(root, rel, found, env, env_label, fix)
        elif rel.endswith(NOTEBOOK_SUFFIX):
            _plan_notebook(root, rel, found, env, env_label, fix)
        else:
            fix.guidance.extend(_guide(f, env, env_label) for f in found)
        result.files.append(fix)
    # only OpenAI keys go to the vault; keyguard's own virtual keys and admin tokens are issued
    # by the vault, not stored in it: they go to .env like any value
    to_sink = {
        name: value
        for name, value in env.pending.items()
        if sink is not None and value.startswith("sk-")
    }
    for name in to_sink:
        del env.pending[name]
    result.planned_env_lines = env.planned_lines()
    result.planned_vault = [
        f"{name} ({Secret(value, register=False).redacted})" for name, value in to_sink.items()
    ]
    if dry_run:
        return result
    # 2. store values first: if anything below fails, the key is still safe somewhere
    if sink is not None:
        for name, value in to_sink.items():
            result.stored.append(sink.store(name, Secret(value, register=False)))
    result.stored += [f"{name} -> {env_label}" for name in env.commit()]
    # 3. then the sources, one atomic replace each
    for fix in result.files:
        if fix.new_code is not None:
            atomic_write(root / fix.path, fix.new_code)
    # 4. and .env must never be committed
    if env.path.exists() and not env_label.startswith(".."):
        result.gitignore_updated = ensure_ignored(root, env_label)
    return result
