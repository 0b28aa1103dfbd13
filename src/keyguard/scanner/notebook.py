"""Jupyter notebooks: tell which cell a key is in, and whether it sits in source or output.

The raw JSON is scanned like any text (keys contain no character JSON escapes, so the line
numbers are those of the file); this module only adds the cell number (1-based, as Jupyter
shows them) and the part. A key in an *output* needs the output cleared, not an env var:
:func:`redact_outputs` replaces it there by its redacted form (``keyguard fix``).
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict, deque
from collections.abc import Collection, Iterator
from typing import Any

from keyguard.domain.keys import redacted_form
from keyguard.scanner.model import RawMatch

#: the parts of a cell that hold what a run produced rather than code
OUTPUT_KEYS = ("outputs", "attachments")


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, dict):
        for item in node.values():
            yield from _strings(item)


def _places(nb: Any) -> list[tuple[int, str, str]]:
    """``(cell number, part, text)`` in file order (json keeps each cell's key order)."""
    places: list[tuple[int, str, str]] = []
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        return places
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict):
            continue
        for key, value in cell.items():
            if key == "source":
                places.append((number, "source", "".join(_strings(value))))
            elif key in OUTPUT_KEYS:
                places.append((number, "output", "\n".join(_strings(value))))
    return places


def annotate_notebook(text: str, matches: list[RawMatch]) -> list[RawMatch]:
    """Return ``matches`` with ``cell`` and ``part`` set where the notebook parses."""
    try:
        places = _places(json.loads(text))
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python parses
        return matches
    queues: dict[str, deque[tuple[int, str]]] = defaultdict(deque)
    for match in matches:
        if match.value not in queues:
            for number, part, body in places:
                for _ in range(body.count(match.value)):
                    queues[match.value].append((number, part))
    out = []
    for match in matches:
        queue = queues.get(match.value)
        if queue:
            number, part = queue.popleft() if len(queue) > 1 else queue[0]
            match = match._replace(cell=number, part=part)
        out.append(match)
    return out


def _replace_in(node: Any, values: Collection[str]) -> Any:
    """``node`` with each value in ``values`` replaced by its redacted form in every string."""
    if isinstance(node, str):
        for value in values:
            node = node.replace(value, redacted_form(value))
        return node
    if isinstance(node, list):
        return [_replace_in(item, values) for item in node]
    if isinstance(node, dict):
        return {k: _replace_in(v, values) for k, v in node.items()}
    return node


#: json.dumps layouts notebooks are saved in: (indent, sort_keys, ensure_ascii), nbformat's first
_LAYOUTS = list(itertools.product((1, 2, 4), (True, False), (False, True)))


def redact_outputs(text: str, values: Collection[str]) -> tuple[str, set[str]] | None:
    """``text`` with every key of ``values`` found literally in a cell output (or attachment)
    replaced there by its redacted form, and the set of keys so removed.

    Everything else stays byte for byte: the keys are replaced in the raw text when that
    changes exactly the output strings (the usual case: a key printed by a cell that reads it
    from the environment); when a key is also in code, the notebook is re-serialised, but only
    if its layout is one ``json.dumps`` reproduces exactly (Jupyter's). ``None`` when neither is
    safe, the notebook does not parse, or no output holds any of ``values`` literally.
    """
    try:
        nb = json.loads(text)
    except ValueError:
        return None
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        return None
    in_outputs = "\0".join(
        s
        for cell in cells
        if isinstance(cell, dict)
        for key in OUTPUT_KEYS
        for s in _strings(cell.get(key))
    )
    found = {v for v in values if v and v in in_outputs}
    if not found:
        return None
    ordered = sorted(found, key=len, reverse=True)  # a key containing another goes first
    target = dict(nb)
    target["cells"] = [
        {k: _replace_in(v, ordered) if k in OUTPUT_KEYS else v for k, v in cell.items()}
        if isinstance(cell, dict)
        else cell
        for cell in cells
    ]
    edited = text
    for value in ordered:
        edited = edited.replace(value, redacted_form(value))
    try:
        if json.loads(edited) == target:
            return edited, found
    except ValueError:  # cannot happen (keys sit inside strings); never write broken JSON
        pass
    for indent, sort_keys, ascii_only in _LAYOUTS:
        dumped = json.dumps(nb, indent=indent, sort_keys=sort_keys, ensure_ascii=ascii_only)
        for end in ("\n", ""):
            if dumped + end == text:
                new = json.dumps(
                    target, indent=indent, sort_keys=sort_keys, ensure_ascii=ascii_only
                )
                return new + end, found
    return None
