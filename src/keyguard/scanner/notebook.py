"""Jupyter notebooks: tell which cell a key is in, and whether it sits in source or output.

The raw JSON is scanned like any text (keys contain no character JSON escapes, so the line
numbers are those of the file); this module only adds the cell number (1-based, as Jupyter
shows them) and the part. A key in an *output* needs the output cleared, not an env var.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Iterator
from typing import Any

from keyguard.scanner.model import RawMatch


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
            elif key in ("outputs", "attachments"):
                places.append((number, "output", "\n".join(_strings(value))))
    return places


def annotate_notebook(text: str, matches: list[RawMatch]) -> list[RawMatch]:
    """Return ``matches`` with ``cell`` and ``part`` set where the notebook parses."""
    try:
        nb = json.loads(text)
    except ValueError:
        return matches
    places = _places(nb)
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
