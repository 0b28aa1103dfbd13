"""Detectors: a name, literal keywords for the prefilter, a compiled pattern, a validator.

OpenAI key shapes, as published by gitleaks (rule ``openai-api-key`` in ``config/gitleaks.toml``:
``sk-(?:proj|svcacct|admin)-(?:[A-Za-z0-9_-]{74}|[A-Za-z0-9_-]{58})T3BlbkFJ(…same…)`` and the
legacy ``sk-[a-zA-Z0-9]{20}T3BlbkFJ[a-zA-Z0-9]{20}``), trufflehog's OpenAI detector (keyword
``T3BlbkFJ``, ``sk-`` + URL-safe body around the marker) and GitHub secret scanning's
``openai_api_key`` pattern:

=====================  ===============================================  ==================
format                 shape                                            seen
=====================  ===============================================  ==================
openai-user-legacy     ``sk-`` + 20 base62 + ``T3BlbkFJ`` + 20 base62   2020-2024 (51 ch)
openai-project         ``sk-proj-`` + 74 + ``T3BlbkFJ`` + 74 (``-_``)   2024- (164 ch)
                       ``sk-proj-`` + 20 + ``T3BlbkFJ`` + 20 (early)    2024 (56 ch)
openai-service-account ``sk-svcacct-`` + 74|58 + marker + 74|58         2024-
openai-admin           ``sk-admin-`` + 58|74 + marker + 58|74           2024-
openai-user            ``sk-None-`` + 74 + marker + 74                  2024
=====================  ===============================================  ==================

Lengths changed three times, so the pattern anchors on what has never changed (``sk-``, the
marker ``T3BlbkFJ`` = base64("OpenAI"), the URL-safe alphabet) and accepts any body of 16-300
characters on each side; known lengths raise the confidence to ``high``, others get ``medium``.
Stripe (``sk_live_``), Anthropic (``sk-ant-…``) and 32-hex ``sk-`` keys never carry the marker.
Format-valid fakes are removed by :func:`keyguard.scanner.filters.fake_reason`.

keyguard's own credentials are recognised by their checksums: virtual keys (``kg_…``) and
admin-API tokens (``kga_…``); see :mod:`keyguard.domain.keys` and
:mod:`keyguard.domain.admin_tokens`.

Third-party detectors register under the entry-point group ``keyguard.detectors``; the entry
point names a :class:`Detector` subclass (instantiated without arguments) or an instance.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import ClassVar

from keyguard.domain.admin_tokens import ADMIN_TOKEN_RE, is_admin_token
from keyguard.domain.keys import OPENAI_MARKER, VIRTUAL_KEY_RE, is_virtual_key
from keyguard.scanner.concat import PREFILTER_TAIL as JOIN_TAIL
from keyguard.scanner.concat import PREFIXES_AFTER_K as JOIN_AFTER_K
from keyguard.scanner.filters import fake_reason

#: what may stand right before a key that starts after an alphanumeric character: an escape
#: (``\n``, ``\u0022``, ``\x22``) or a percent-encoded byte (``%3D``), common in JSON and URLs
_ESCAPE_BEFORE = re.compile(r"(?:\\[nrtbfv]|%[0-9A-Fa-f]{2}|\\u[0-9A-Fa-f]{4}|\\x[0-9A-Fa-f]{2})\Z")


def left_boundary_ok(text: str, start: int) -> bool:
    """A key may start at ``start`` if a non-alphanumeric character or an escape precedes it.

    Checked in Python rather than with look-behinds so that each pattern starts with a
    literal, which lets the regex engine skip ahead quickly.
    """
    if start == 0 or not text[start - 1].isascii() or not text[start - 1].isalnum():
        return True
    return _ESCAPE_BEFORE.search(text, max(0, start - 6), start) is not None


ENTRY_POINT_GROUP = "keyguard.detectors"


class Detector:
    """Base class: subclasses set ``name``, ``keywords``, ``pattern`` and ``classify``."""

    name: ClassVar[str] = "detector"
    #: cheap literal prefilter on the raw bytes: the detector runs only if one is present
    keywords: ClassVar[tuple[bytes, ...]] = ()
    #: short substrings of the keywords for the engine's single first pass over every file
    #: (one regex over all detectors' anchors); defaults to ``keywords``
    anchors: ClassVar[tuple[bytes, ...]] = ()
    #: the whole match is the candidate key
    pattern: ClassVar[re.Pattern[str]]

    #: optional bytes regex run on the raw bytes after a keyword hit: no match, no decoding
    quick: ClassVar[re.Pattern[bytes] | None] = None

    def wanted(self, data: bytes) -> bool:
        """Cheap test on raw bytes: could ``data`` contain this detector's keys?"""
        if self.keywords and not any(k in data for k in self.keywords):
            return False
        return self.quick is None or self.quick.search(data) is not None

    def candidates(self, text: str) -> Iterator[tuple[int, str]]:
        """Yield ``(offset, value)`` for each match that has a valid left boundary."""
        pattern, pos = self.pattern, 0
        while True:
            m = pattern.search(text, pos)
            if m is None:
                return
            if left_boundary_ok(text, m.start()):
                yield m.start(), m.group(0)
                pos = m.end()
            else:  # e.g. the "sk-" of "task-": look again one character further
                pos = m.start() + 1

    def classify(self, value: str) -> tuple[str, str] | None:
        """Return ``(format, confidence)`` for a real-looking key, ``None`` to drop it."""
        raise NotImplementedError


class OpenAIKeyDetector(Detector):
    """OpenAI API keys of every format (see the module docstring for shapes and sources)."""

    name = "openai"
    keywords = (OPENAI_MARKER.encode(),)
    # "kFJ" ends the marker and starts with the same byte as "kg_": the engine's combined
    # first-pass regex then has one literal first byte, which the regex engine scans fast
    anchors = (b"kFJ",)
    pattern = re.compile(
        r"sk-[A-Za-z0-9_-]{16,300}?" + OPENAI_MARKER + r"[A-Za-z0-9_-]{16,300}(?![A-Za-z0-9_-])"
    )
    _KINDS: ClassVar[dict[str, str]] = {
        "proj": "openai-project",
        "svcacct": "openai-service-account",
        "admin": "openai-admin",
        "None": "openai-user",
    }
    _LONG = (58, 74)

    def candidates(self, text: str) -> Iterator[tuple[int, str]]:
        for offset, value in super().candidates(text):
            # a trailing '-'/'_' is punctuation (markdown emphasis, "key-"), never part of a key
            yield offset, value.rstrip("-_")

    def classify(self, value: str) -> tuple[str, str] | None:
        rest = value[3:]
        kind, sep, tail = rest.partition("-")
        fmt = self._KINDS.get(kind) if sep else None
        if fmt is None:
            fmt, tail = "openai-user-legacy", rest
        left, _, right = tail.partition(OPENAI_MARKER)
        if len(left) < 16 or len(right) < 16 or fake_reason(left + right) is not None:
            return None
        if fmt == "openai-user-legacy":
            legacy = len(left) == len(right) == 20 and (left + right).isalnum()
            return (fmt, "high") if legacy else ("openai-api-key", "medium")
        if len(left) in self._LONG and len(right) in self._LONG:
            return fmt, "high"
        if len(left) == len(right) == 20 and fmt == "openai-project":
            return fmt, "high"
        return fmt, "medium"


class VirtualKeyDetector(Detector):
    """keyguard virtual keys: ``kg_`` + id + secret + CRC32 checksum (validated)."""

    name = "keyguard"
    keywords = (b"kg_", b"kg%5")
    anchors = keywords
    quick = re.compile(rb"kg(?:_|%5[Ff])[0-9a-z]{12}[0-9A-Za-z]")
    pattern = re.compile(VIRTUAL_KEY_RE.pattern + r"(?![0-9A-Za-z])")

    def classify(self, value: str) -> tuple[str, str] | None:
        return ("keyguard-virtual-key", "high") if is_virtual_key(value) else None

    def wanted(self, data: bytes) -> bool:
        # "kg_" alone is common ("pkg_resources"): confirm with the quick regex from the first
        # hit; look for percent-encoded keys ("kg%5F…") only in data that has a '%' at all
        first = data.find(b"kg_")
        encoded = data.find(b"kg%5") if b"%" in data else -1
        starts = [i for i in (first, encoded) if i >= 0]
        return (
            bool(starts)
            and self.quick is not None
            and (self.quick.search(data, min(starts)) is not None)
        )


class AdminTokenDetector(Detector):
    """keyguard admin tokens (admin API): ``kga_`` + id + secret + CRC32 checksum (validated)."""

    name = "keyguard-admin"
    keywords = (b"kga_", b"kga%5")
    anchors = keywords
    quick = re.compile(rb"kga(?:_|%5[Ff])[0-9a-z]{12}[0-9A-Za-z]")
    pattern = re.compile(ADMIN_TOKEN_RE.pattern + r"(?![0-9A-Za-z])")

    def classify(self, value: str) -> tuple[str, str] | None:
        return ("keyguard-admin-token", "high") if is_admin_token(value) else None


BUILTIN_DETECTORS: tuple[type[Detector], ...] = (
    OpenAIKeyDetector,
    VirtualKeyDetector,
    AdminTokenDetector,
)


@functools.lru_cache(maxsize=16)
def _first_pass(anchors: tuple[bytes, ...], joined: bool) -> re.Pattern[bytes]:
    ordered = sorted(set(anchors))
    if not joined:
        return re.compile(b"|".join(re.escape(a) for a in ordered))
    # "k(?:-(?<=sk-)TAIL|FJ|g_(?:TAIL)?|…)": one literal first byte for the regex engine to
    # skip to, and the join shares the "kg_"/"kga_" anchors' steps (the optional tail is tried
    # first, so a join wins over the anchor at the same position). No capturing group (a join
    # is told apart as a hit that is no anchor): a group stops the fast skipping
    tail = b"(?:" + JOIN_TAIL + b")"
    rest = [JOIN_AFTER_K[p] + tail for p in JOIN_AFTER_K if p not in ordered]
    for a in ordered:
        if a.startswith(b"k"):
            rest.append(re.escape(a[1:]) + (tail + b"?" if a in JOIN_AFTER_K else b""))
    others = [re.escape(a) for a in ordered if not a.startswith(b"k")]
    return re.compile(b"|".join([b"k(?:" + b"|".join(rest) + b")", *others]))


def first_pass(detectors: Sequence[Detector], joined: bool = False) -> re.Pattern[bytes]:
    """One bytes regex matching any detector's anchor: a blob it misses has no key at all.

    One pass over the data instead of one ``find`` per keyword; with the built-in anchors
    (``kFJ``, ``kg_``, ``kg%5``) the regex engine factors out the common first byte. With
    ``joined``, the same pass looks for a key split over joined string literals
    (:mod:`keyguard.scanner.concat`), whose prefilter also starts with ``k``: much
    cheaper than a pass of its own on text full of ``k`` (the pass stops at each one). A hit
    that is none of the anchors is such a join.
    """
    return _first_pass_for(tuple(detectors), joined)


@functools.lru_cache(maxsize=64)
def _first_pass_for(detectors: tuple[Detector, ...], joined: bool) -> re.Pattern[bytes]:
    # keyed on the detector objects themselves: the hot path skips rebuilding the anchors
    return _first_pass(tuple(a for d in detectors for a in (d.anchors or d.keywords)), joined)


def _group_declared() -> bool:
    """Cheap check: does any installed distribution declare ``keyguard.detectors``?

    ``importlib.metadata`` costs tens of milliseconds to import (it pulls in ``email``); the
    pre-commit hook should not pay that when no plugin is installed. Reading the few
    ``entry_points.txt`` files on ``sys.path`` is much cheaper.
    """
    needle = f"[{ENTRY_POINT_GROUP}]"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                try:
                    with open(os.path.join(entry, name, "entry_points.txt"), encoding="utf-8") as f:
                        if needle in f.read():
                            return True
                except OSError:
                    continue
    return False


def load_detectors(*, plugins: bool = True) -> list[Detector]:
    """The built-in detectors, plus those registered under ``keyguard.detectors``."""
    found: list[Detector] = [cls() for cls in BUILTIN_DETECTORS]
    if not plugins or not _group_declared():
        return found
    from importlib import metadata

    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        detector = obj() if isinstance(obj, type) else obj
        if not isinstance(detector, Detector):
            raise TypeError(f"entry point {ep.name!r} is not a keyguard Detector")
        if all(d.name != detector.name for d in found):
            found.append(detector)
    return found
