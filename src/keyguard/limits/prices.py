"""The price table: the one shipped in ``keyguard/data/prices.json``, plus a user override.

An override file (setting ``prices_file``, ``KEYGUARD_PRICES_FILE``) has the same JSON shape, or
the same keys in TOML (``[models."gpt-4o"] input = 2.5 ...``); the models it lists replace the
shipped ones and its ``default``, when given, replaces the default price.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from keyguard.domain.pricing import PriceTable
from keyguard.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


@lru_cache(maxsize=1)
def shipped_prices() -> PriceTable:
    """The table shipped with this keyguard version."""
    text = resources.files("keyguard").joinpath("data/prices.json").read_text("utf-8")
    return PriceTable.from_mapping(json.loads(text))


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"prices_file {path}: cannot read it ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        kind = path.suffix[1:] or "JSON"
        raise ConfigError(f"prices_file {path}: not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"prices_file {path}: must hold an object")
    return data


def load_prices(override: Path | None = None) -> PriceTable:
    """The shipped table, with ``override``'s entries on top when given."""
    table = shipped_prices()
    if override is None:
        return table
    try:
        return table.merged(_read(override))
    except ValueError as exc:
        raise ConfigError(f"prices_file {override}: {exc}") from None
