"""Files ``git log -p`` shows no text for: read their blobs and scan those that are UTF-16.

git calls a file binary when its first 8,000 bytes hold a NUL, which every UTF-16 text file
does ("Binary files a/x and b/x differ"). A history scan notes each such file version (its
blob id comes from the ``index`` line that ``--full-index`` makes complete), then reads the
blobs with one ``git cat-file --batch`` process, at most ``max_file_size`` bytes each (sizes
come first from ``--batch-check``), and scans them with the tree scan's rule
(:func:`keyguard.scanner.engine.sniff_encoding`: a BOM or the NUL pattern of UTF-16 text).
Real binary files and oversized blobs are listed as skipped, once per path, as before.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from keyguard.errors import ScanError

#: ``git -c …`` overrides for every git process keyguard runs on a scanned (untrusted) repository:
#: its own config must not make git run a program (``core.fsmonitor`` runs on commands that
#: read the index; ``log.showSignature`` makes ``git log`` run ``gpg.program``). External
#: diffs and textconv filters are turned off by the history scan's own options.
SAFE_CONFIG = ("-c", "core.fsmonitor=false", "-c", "log.showSignature=false")


def git_cmd(repo: Path, *args: str) -> list[str]:
    """``git -C repo`` with :data:`SAFE_CONFIG`, then ``args``."""
    return ["git", "-C", str(repo), *SAFE_CONFIG, *args]


class BinaryVersion(NamedTuple):
    """One version of a file git showed as binary in the history."""

    ordinal: int  # the commit's position in the (oldest first) log
    commit: str | None
    date: str | None
    path: str
    blob: str


def blob_id(section: bytes, before: int) -> str | None:
    """The new blob id from a diff section's ``index OLD..NEW`` line (before ``before``)."""
    at = section.rfind(b"\nindex ", 0, before)
    if at < 0:
        return None
    end = section.find(b"\n", at + 1)
    fields = section[at + 7 : end if end >= 0 else len(section)].split(b" ")
    _, sep, new = fields[0].partition(b"..")
    if not sep or not new or new.strip(b"0") == b"":
        return None
    return new.decode("ascii", "replace")


def blob_sizes(repo: Path, blobs: Iterable[str]) -> dict[str, int]:
    """Size of each blob (``git cat-file --batch-check``); missing ones are left out."""
    query = "".join(f"{b}\n" for b in blobs).encode()
    if not query:
        return {}
    out = git(repo, "cat-file", "--batch-check", stdin=query)
    sizes: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == b"blob":
            sizes[parts[0].decode()] = int(parts[2])
    return sizes


def read_blobs(repo: Path, blobs: list[str]) -> Iterator[tuple[str, bytes]]:
    """``(blob id, content)`` for each blob, one at a time through one ``cat-file --batch``."""
    if not blobs:
        return
    cmd = git_cmd(repo, "cat-file", "--batch")
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
    except OSError as exc:
        raise ScanError(f"cannot run git: {exc}") from exc
    assert proc.stdin is not None and proc.stdout is not None
    with proc:
        try:
            for blob in blobs:  # one request, one answer: never blocks on a full pipe
                proc.stdin.write(f"{blob}\n".encode())
                proc.stdin.flush()
                line = proc.stdout.readline()
                if not line:
                    raise ScanError("git cat-file stopped answering")
                header = line.split()
                if len(header) != 3:  # "<id> missing"
                    continue
                size = int(header[2])
                data = proc.stdout.read(size)
                proc.stdout.read(1)  # the newline after the content
                if len(data) != size:
                    raise ScanError("git cat-file stopped in the middle of a blob")
                yield blob, data
        except BrokenPipeError as exc:
            raise ScanError("git cat-file stopped answering") from exc
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()


def git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    """``git -C repo ARGS`` with ``stdin``; its stdout, or :class:`ScanError` (stderr's last
    line) when git cannot run or fails."""
    try:
        out = subprocess.run(git_cmd(repo, *args), input=stdin, capture_output=True, check=False)
    except OSError as exc:
        raise ScanError(f"cannot run git: {exc}") from exc
    if out.returncode != 0:
        msg = os.fsdecode(out.stderr).strip().splitlines()
        raise ScanError(f"git {args[0]} failed: {msg[-1] if msg else out.returncode}")
    return out.stdout
