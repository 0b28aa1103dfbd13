"""Scan many files fast: read bytes, prefilter, and spread the work over processes.

Small scans (a pre-commit, a handful of files) run in-process: starting workers would cost
more than the scan. Larger trees are shared among forked children (one per core; a spawned
process pool where fork is not safe); workers send back plain
:class:`~keyguard.scanner.model.RawMatch` tuples, and the parent wraps each value into a
``Secret`` straight away.
"""

from __future__ import annotations

import errno
import os
import pickle
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from keyguard.errors import ScanError
from keyguard.scanner.detectors import Detector, load_detectors
from keyguard.scanner.engine import Binary, scan_bytes
from keyguard.scanner.model import Finding, RawMatch, ScanReport, Skipped, SourceKind

DEFAULT_MAX_FILE_SIZE = 20 * 1024 * 1024
PARALLEL_THRESHOLD = 200  # files; below this a pool costs more than it saves
BATCH_FILES = 48

FileResult = tuple[str, list[RawMatch], str | None, int]

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)

#: skip reason for paths that are not (or no longer) regular files; not reported
GONE = "gone"

_worker_detectors: list[Detector] | None = None


def _init_worker(detectors: list[Detector] | None) -> None:
    global _worker_detectors
    _worker_detectors = detectors if detectors is not None else load_detectors()


def too_large(max_size: int) -> str:
    """The skip reason of a file over ``max_size`` bytes (tree and staged scans alike)."""
    mib, rest = divmod(max_size, 1024 * 1024)
    return f"larger than {mib} MiB" if mib and not rest else f"larger than {max_size} bytes"


def scan_file(full: str, rel: str, detectors: Sequence[Detector], max_size: int) -> FileResult:
    """Read one file and scan it; returns ``(rel, matches, skip reason, bytes read)``."""
    try:
        # O_NONBLOCK: a FIFO in the tree must not hang the scan (no effect on regular files);
        # O_NOFOLLOW: a symlink in the tree (git tracks them) is not followed, maybe out of it
        fd = os.open(full, _OPEN_FLAGS)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return rel, [], GONE, 0
            if st.st_size > max_size:
                return rel, [], too_large(max_size), 0
            data = os.read(fd, st.st_size + 1)
            if len(data) != st.st_size:  # a short read, or the file changed while we read it
                data += _read_rest(fd)
        finally:
            os.close(fd)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return rel, [], GONE, 0  # deleted since listing, or a submodule: nothing to report
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink: its target, if in the tree, is read itself
            return rel, [], GONE, 0
        return rel, [], f"unreadable ({exc.strerror or type(exc).__name__})", 0
    return scan_data(data, rel, detectors)


def scan_data(
    data: bytes, rel: str, detectors: Sequence[Detector], max_size: int | None = None
) -> FileResult:
    """Scan one file's content already in memory (a staged blob, stdin), as :func:`scan_file`
    scans a file: the same skip reasons (too large, binary) and the same byte count."""
    if max_size is not None and len(data) > max_size:
        return rel, [], too_large(max_size), 0
    try:
        matches = scan_bytes(data, detectors, notebook=rel.endswith(".ipynb"))
    except Binary:
        return rel, [], "binary", len(data)
    return rel, matches, None, len(data)


def _join(root: str, rel: str) -> str:
    return rel if root in (".", "") else os.path.join(root, rel)


def _read_rest(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _scan_batch(job: tuple[str, list[str], int]) -> list[FileResult]:
    root, rels, max_size = job
    detectors = _worker_detectors if _worker_detectors is not None else load_detectors()
    return [scan_file(_join(root, rel), rel, detectors, max_size) for rel in rels]


class Scanner:
    """Scans files and blobs with a fixed set of detectors."""

    def __init__(
        self,
        detectors: Sequence[Detector] | None = None,
        *,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        jobs: int | None = None,
    ) -> None:
        self.detectors = list(detectors) if detectors is not None else load_detectors()
        self.max_file_size = max_file_size
        self.jobs = jobs if jobs is not None else _usable_cpus()

    def scan_files(self, root: Path, rels: Sequence[str]) -> ScanReport:
        """Scan ``rels`` (posix paths relative to ``root``); in parallel for big trees."""
        start = time.perf_counter()
        report = _collect(self._results(str(root), list(rels)), "file")
        report.seconds = time.perf_counter() - start
        return report

    def scan_blobs(
        self, blobs: Iterable[tuple[str, bytes]], source: SourceKind, *, size_limit: bool = True
    ) -> ScanReport:
        """Scan ``(path, content)`` pairs in-process, counted exactly as :meth:`scan_files`
        counts files: binary and (with ``size_limit``) oversized blobs are skipped, not scanned.
        """
        start = time.perf_counter()
        limit = self.max_file_size if size_limit else None
        results = (scan_data(data, rel, self.detectors, limit) for rel, data in blobs)
        report = _collect(results, source)
        report.seconds = time.perf_counter() - start
        return report

    def _results(self, root: str, rels: list[str]) -> Iterable[FileResult]:
        if self.jobs <= 1 or len(rels) < PARALLEL_THRESHOLD:
            for rel in rels:
                yield scan_file(_join(root, rel), rel, self.detectors, self.max_file_size)
        elif _fork_is_safe():
            yield from _forked(root, rels, self.jobs, self.detectors, self.max_file_size)
        else:
            yield from self._pooled(root, rels)

    def _pooled(self, root: str, rels: list[str]) -> Iterable[FileResult]:
        """Portable path (spawn start method): a process pool over interleaved batches."""
        import multiprocessing

        n = max(1, len(rels) // BATCH_FILES)
        jobs = [(root, rels[i::n], self.max_file_size) for i in range(n)]
        ctx = multiprocessing.get_context("spawn")
        # the workers use this scanner's detectors, as the in-process and forked paths do
        with ctx.Pool(self.jobs, initializer=_init_worker, initargs=(self.detectors,)) as pool:
            for batch_result in pool.imap_unordered(_scan_batch, jobs):
                yield from batch_result

    def scan_blob(self, data: bytes, path: str, source: SourceKind = "file") -> list[Finding]:
        """Scan one in-memory blob; binary content yields no findings."""
        try:
            matches = scan_bytes(data, self.detectors, notebook=path.endswith(".ipynb"))
        except Binary:
            return []
        return [Finding.from_raw(m, path, source) for m in matches]


def _collect(results: Iterable[FileResult], source: SourceKind) -> ScanReport:
    """One report from per-file results; the only place files are counted as scanned or
    skipped, so tree, staged and stdin scans report the same statistics for the same content.
    """
    report = ScanReport()
    for rel, matches, reason, nbytes in results:
        if reason is not None:
            if reason != GONE:
                report.skipped.append(Skipped(rel, reason))
            continue
        report.files_scanned += 1
        report.bytes_scanned += nbytes
        report.findings.extend(Finding.from_raw(m, rel, source) for m in matches)
    report.sort()
    return report


#: files per work item handed out to forked children
CHUNK_FILES = 16


def _forked(
    root: str, rels: list[str], jobs: int, detectors: Sequence[Detector], max_size: int
) -> Iterable[FileResult]:
    """Scan ``rels`` in ``jobs`` forked children that pull chunks of files from a shared pipe.

    Cheaper than a ``multiprocessing.Pool`` (no feeder threads, one pickle per child): on a
    200 MB tree the pool's overhead was about a third of the whole scan. The work queue is a
    pipe filled with 4-byte chunk numbers before the fork; reads of 4 bytes from a pipe are
    atomic, so each chunk goes to exactly one child and a child that drew big files simply
    takes fewer chunks.
    """
    # at most 4,000 chunks: the whole queue (16 KB) fits in any pipe buffer, so it is written
    # before the fork without a writer thread
    size = max(CHUNK_FILES, -(-len(rels) // 4000))
    chunks = [rels[i : i + size] for i in range(0, len(rels), size)]
    queue_r, queue_w = os.pipe()
    os.write(queue_w, b"".join(i.to_bytes(4, "little") for i in range(len(chunks))))
    os.close(queue_w)
    children: list[tuple[int, int]] = []
    for _ in range(jobs):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: scan, send the results, leave without running any cleanup
            status = 1
            try:
                os.close(read_end)
                part: list[FileResult] = []
                for rel in _take(queue_r, chunks):
                    part.append(scan_file(_join(root, rel), rel, detectors, max_size))
                with os.fdopen(write_end, "wb") as out:
                    pickle.dump(part, out, protocol=pickle.HIGHEST_PROTOCOL)
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        children.append((pid, read_end))
    os.close(queue_r)
    failed = False
    for pid, read_end in children:
        with os.fdopen(read_end, "rb") as fh:
            data = fh.read()
        _, status = os.waitpid(pid, 0)
        if status != 0 or not data:
            failed = True
            continue
        # our own child's output, read from a private pipe: trusted data
        yield from pickle.loads(data)  # noqa: S301
    if failed:
        raise ScanError("a scan worker process failed")


def _take(queue: int, chunks: list[list[str]]) -> Iterable[str]:
    """The files of every chunk this child draws from the queue, until it is empty."""
    while len(record := os.read(queue, 4)) == 4:
        yield from chunks[int.from_bytes(record, "little")]


def _usable_cpus() -> int:
    """CPUs this process may run on (respects cpusets/affinity, unlike ``os.cpu_count``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _fork_is_safe() -> bool:
    # forking a process with other threads running can deadlock the child
    return hasattr(os, "fork") and threading.active_count() == 1
