"""Jupyter notebooks: the cell is reported, and source vs output tells what to do."""

from __future__ import annotations

import json

from keyguard.domain.keys import fingerprint
from scanner.keygen import openai_key, virtual_key


def _nb(cells):
    # nbformat writes keys sorted: "outputs" comes before "source" in the file
    return json.dumps(
        {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
        indent=1,
        sort_keys=True,
    )


def test_cells_and_parts(tmp_path, scanner, rng):
    a, b, c = openai_key(rng), virtual_key(rng), openai_key(rng, "user")
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Demo\n", f"key: `{c}`"]},
        {
            "cell_type": "code",
            "execution_count": 1,
            "metadata": {},
            "source": ["import os\n", f'os.environ["OPENAI_API_KEY"] = "{a}"\n', "print(key)"],
            "outputs": [{"name": "stdout", "output_type": "stream", "text": [f"{a}\n"]}],
        },
        {
            "cell_type": "code",
            "execution_count": 2,
            "metadata": {},
            "source": ["client"],
            "outputs": [
                {
                    "data": {"text/plain": [f"Client(api_key='{b}')"]},
                    "execution_count": 2,
                    "metadata": {},
                    "output_type": "execute_result",
                }
            ],
        },
    ]
    (tmp_path / "demo.ipynb").write_text(_nb(cells))
    findings = scanner.scan_files(tmp_path, ["demo.ipynb"]).findings
    got = sorted((f.cell, f.part, f.fingerprint) for f in findings)
    assert got == sorted(
        [
            (1, "source", fingerprint(c)),
            (2, "source", fingerprint(a)),
            (2, "output", fingerprint(a)),
            (3, "output", fingerprint(b)),
        ]
    )
    raw = (tmp_path / "demo.ipynb").read_text().splitlines()
    for f in findings:
        assert f.secret.reveal() in raw[f.line - 1]
    outputs = [f for f in findings if f.part == "output"]
    assert all("clear the output" in f.remedy for f in outputs)


def test_broken_notebook_is_still_scanned_as_text(tmp_path, scanner, rng):
    key = openai_key(rng)
    (tmp_path / "broken.ipynb").write_text('{"cells": [ "' + key + '"')
    [f] = scanner.scan_files(tmp_path, ["broken.ipynb"]).findings
    assert f.cell is None and f.line == 1
