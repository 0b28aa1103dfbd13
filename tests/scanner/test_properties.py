"""Property tests: the detector never crashes, and always finds a valid key in random text."""

from __future__ import annotations

import contextlib
import random

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from keyguard.domain.keys import generate_openai_style_key
from keyguard.scanner.baseline import Baseline
from keyguard.scanner.detectors import OpenAIKeyDetector, VirtualKeyDetector, load_detectors
from keyguard.scanner.engine import Binary, scan_bytes, scan_text
from keyguard.scanner.filters import fake_reason
from scanner.keygen import KINDS, virtual_key

DETECTORS = load_detectors(plugins=False)
#: characters that may stand right before/after a key (anything outside its alphabet)
DELIMITERS = st.sampled_from(
    list(" \t\n\r\"'`<>()[]{}.,;:=/\\?&#|!*~^$@+") + ["\u3002", "é", "%22"]
)
# sprinkle the characters that matter (prefixes, marker, escapes) into random text
NOISE = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from(list("sk-_kgT3BlbkFJ%\\n"))),
    max_size=300,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(NOISE)
def test_scan_text_never_crashes(text):
    for m in scan_text(text, DETECTORS):
        assert m.line >= 1 and m.column >= 1


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=2000))
def test_scan_bytes_never_crashes(data):
    with contextlib.suppress(Binary):
        scan_bytes(data, DETECTORS, notebook=True)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    prefix=NOISE,
    suffix=NOISE,
    left=DELIMITERS,
    right=DELIMITERS,
    kind=st.sampled_from([*KINDS, "virtual"]),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_valid_key_in_random_text_is_always_found(prefix, suffix, left, right, kind, seed):
    rng = random.Random(seed)
    if kind == "virtual":
        key, detector = virtual_key(rng), VirtualKeyDetector()
    else:
        key, detector = generate_openai_style_key(kind, rng=rng), OpenAIKeyDetector()
    assume(detector.classify(key) is not None)  # ~never false for generated keys
    text = prefix + left + key + right + suffix
    assume("keyguard: allow" not in text)
    values = {m.value for m in scan_text(text, DETECTORS)}
    assert key in values
    # a NUL byte makes a UTF-8 file binary (skipped with a note, as git does); UTF-16 is text
    encodings = ("utf-16",) if "\x00" in text else ("utf-8", "utf-16")
    for encoding in encodings:
        data = text.encode(encoding, "surrogatepass")
        assert key in {m.value for m in scan_bytes(data, DETECTORS)}


def test_generated_keys_are_never_filtered_as_fakes():
    rng = random.Random(7)
    for kind in KINDS:
        for _ in range(500):
            key = generate_openai_style_key(kind, rng=rng)
            assert OpenAIKeyDetector().classify(key) is not None, kind


@settings(derandomize=True)
@given(st.text(max_size=200))
def test_fake_reason_total(text):
    fake_reason(text)


@settings(derandomize=True)
@given(
    st.binary(min_size=16, max_size=64),
    st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8))),
)
def test_baseline_round_trip(salt, entries):
    b = Baseline(salt=salt, entries={(h, p): "openai-project" for h, p in entries})
    again = Baseline.from_json(b.to_json())
    assert again.salt == b.salt and again.entries == b.entries
