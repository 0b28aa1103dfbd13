"""Prices, token estimates and the ``usage`` an OpenAI response reports. Pure: no I/O.

Money is counted in integer **nano-dollars** (1e-9 USD) everywhere a counter is kept, so sums
are exact in Redis (Lua numbers are doubles: exact to 2**53 nano-USD, about $9M) and in SQLite.

* :class:`PriceTable` — USD per 1M tokens (input, cached input, output) per model; a model name
  matches exactly, then by the longest listed prefix followed by ``-`` (``gpt-4o-2024-08-06``
  is priced as ``gpt-4o``); unknown models are charged at the table's ``default``.
* :func:`estimate_request` — what admission reserves before the upstream answers: input tokens
  from a cheap chars/4 count of the body's ``messages``/``input``/``prompt``, output tokens from
  ``max_tokens``/``max_completion_tokens``/``max_output_tokens`` (else a default).
* :func:`usage_from_response` — the real figures from a response's (or final chunk's) ``usage``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NANO = 1_000_000_000
#: output tokens assumed when a request sets no max_tokens (settled to the real count later)
DEFAULT_OUTPUT_TOKENS = 1024
#: the most tokens any one request is counted for (estimate or reported usage): far above any
#: real request, small enough that no counter (Redis HINCRBY, SQLite) can overflow from a few
MAX_TOKENS = 1 << 32
#: the most nano-USD one request is charged (about $9M: what a Lua number holds exactly)
MAX_COST_NANO = 1 << 53
#: counters saturate here (a signed 64-bit integer: Redis and SQLite integers)
COUNTER_MAX = (1 << 63) - 1
_OUTPUT_FIELDS = ("max_completion_tokens", "max_output_tokens", "max_tokens")
_INPUT_FIELDS = ("messages", "input", "prompt", "instructions", "tools", "functions")


def usd_to_nano(usd: float) -> int:
    """Dollars to integer nano-dollars (rounded)."""
    return round(usd * NANO)


def nano_to_usd(nano: int) -> float:
    return nano / NANO


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M tokens."""

    input: float
    cached_input: float
    output: float

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any]) -> ModelPrice:
        try:
            inp = float(data["input"])
            out = float(data.get("output", 0.0))
            cached = float(data.get("cached_input", inp))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"price of {name!r}: needs numeric input/output") from exc
        if not min(inp, out, cached) >= 0 or max(inp, out, cached) == float("inf"):
            raise ValueError(f"price of {name!r}: prices must be finite and not negative")
        return cls(inp, cached, out)

    def cost_nano(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        """Cost in nano-USD; ``cached_tokens`` is the part of ``input_tokens`` served cached."""
        inp = min(max(input_tokens, 0), MAX_TOKENS)
        cached = min(max(cached_tokens, 0), inp)
        fresh = inp - cached
        out = min(max(output_tokens, 0), MAX_TOKENS)
        # nano-USD = tokens * USD/1M * 1e9 / 1e6 = tokens * price * 1000
        cost = round((fresh * self.input + cached * self.cached_input) * 1000) + round(
            out * self.output * 1000
        )
        return min(cost, MAX_COST_NANO)


@dataclass(frozen=True)
class PriceTable:
    """Model -> :class:`ModelPrice`, with a ``default`` for models it does not list."""

    models: Mapping[str, ModelPrice]
    default: ModelPrice
    _prefixes: tuple[str, ...] = field(default=(), repr=False, compare=False)
    #: model name -> its price, as looked up (bounded; names come from clients)
    _memo: dict[str, ModelPrice] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_length = tuple(sorted(self.models, key=len, reverse=True))
        object.__setattr__(self, "_prefixes", by_length)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PriceTable:
        """Build from the JSON document shape of ``keyguard/data/prices.json``."""
        models = data.get("models", {})
        if not isinstance(models, Mapping):
            raise ValueError("prices: 'models' must be an object")
        default = data.get("default")
        if not isinstance(default, Mapping):
            raise ValueError("prices: 'default' must be an object")
        return cls(
            {str(k): ModelPrice.from_mapping(str(k), v) for k, v in models.items()},
            ModelPrice.from_mapping("default", default),
        )

    def merged(self, override: Mapping[str, Any]) -> PriceTable:
        """This table with ``override``'s models (and ``default``, when given) replacing ours."""
        models = override.get("models", {})
        if not isinstance(models, Mapping):
            raise ValueError("prices: 'models' must be an object")
        extra = {str(k): ModelPrice.from_mapping(str(k), v) for k, v in models.items()}
        default = self.default
        if "default" in override:
            default = ModelPrice.from_mapping("default", override["default"])
        return PriceTable({**self.models, **extra}, default)

    def to_mapping(self) -> dict[str, Any]:
        """The table in the JSON shape :meth:`from_mapping` reads (for the native edge)."""

        def one(p: ModelPrice) -> dict[str, float]:
            return {"input": p.input, "cached_input": p.cached_input, "output": p.output}

        return {
            "default": one(self.default),
            "models": {name: one(p) for name, p in self.models.items()},
        }

    def price(self, model: str | None) -> ModelPrice:
        """The price of ``model`` (exact name, longest ``prefix-`` match, else ``default``)."""
        if not model:
            return self.default
        memo = self._memo
        found = memo.get(model)
        if found is not None:
            return found
        found = self.models.get(model)
        if found is None:
            found = self.default
            for prefix in self._prefixes:
                if model.startswith(prefix) and model[len(prefix)] == "-":
                    found = self.models[prefix]
                    break
        if len(memo) >= 1024:  # model names come from clients: keep the memo small
            memo.clear()
        memo[model] = found
        return found

    def cost_nano(
        self, model: str | None, input_tokens: int, output_tokens: int, cached_tokens: int = 0
    ) -> int:
        return self.price(model).cost_nano(input_tokens, output_tokens, cached_tokens)


@dataclass(frozen=True)
class Estimate:
    """What admission reserves for one request: tokens (in + out) and cost in nano-USD."""

    tokens: int = 0
    cost_nano: int = 0

    @property
    def cost_usd(self) -> float:
        return nano_to_usd(self.cost_nano)


@dataclass(frozen=True)
class TokenUsage:
    """Token counts reported by the upstream."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if value is None or isinstance(value, (bool, int, float)):
        return 0
    # structured content (parts, tool schemas): its JSON text is a fair upper-ish bound
    return len(_COMPACT.encode(value))


#: ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` without a new encoder per call
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def requested_choices(body: Mapping[str, Any]) -> int:
    """How many completions the request asks for (``n``, at most 128 as OpenAI allows)."""
    choices = body.get("n")
    if isinstance(choices, int) and not isinstance(choices, bool) and choices > 1:
        return min(choices, 128)
    return 1


def requested_output_tokens(body: Mapping[str, Any]) -> int | None:
    """The output cap the request names, if any (``max_completion_tokens`` first), times the
    number of completions asked for."""
    for name in _OUTPUT_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return min(value * requested_choices(body), MAX_TOKENS)
    return None


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """A cheap upper-ish count of input tokens: characters / 4 of the prompt-bearing fields."""
    chars = sum(_chars(body.get(name)) for name in _INPUT_FIELDS)
    return (chars + 3) // 4


def estimate_request(
    body: Mapping[str, Any] | None,
    model: str | None,
    prices: PriceTable,
    *,
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    body_size: int = 0,
    generates: bool = False,
) -> Estimate:
    """The reservation for a request: ``body`` is its parsed JSON (``None`` when it was not
    read or is not JSON: then ``body_size`` bytes / 4 count as input, plus the default output
    when the endpoint ``generates`` text). Embeddings have no output tokens."""
    if body is None:
        inp = (body_size + 3) // 4
        out = default_output_tokens if generates else 0
    else:
        inp = estimate_input_tokens(body)
        cap = requested_output_tokens(body)
        embeddings = model is not None and "embedding" in model
        if embeddings:
            out = 0
        elif cap is not None:
            out = cap
        else:  # no cap named: the default per completion asked for
            out = default_output_tokens * requested_choices(body)
    inp, out = min(inp, MAX_TOKENS), min(out, MAX_TOKENS)
    return Estimate(tokens=inp + out, cost_nano=prices.cost_nano(model, inp, out))


def _int(value: Any) -> int:
    """A reported token count: a positive integer (at most :data:`MAX_TOKENS`), else 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return min(value, MAX_TOKENS)
    return 0


def usage_from_response(usage: Any) -> TokenUsage | None:
    """Token counts from a ``usage`` object (chat/completions, responses or embeddings)."""
    if not isinstance(usage, Mapping):
        return None
    if "input_tokens" in usage or "output_tokens" in usage:  # the Responses API
        inp, out = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
        details = usage.get("input_tokens_details")
    elif "prompt_tokens" in usage or "completion_tokens" in usage:
        inp, out = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        details = usage.get("prompt_tokens_details")
    else:
        return None
    cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    if not out and not inp and _int(usage.get("total_tokens")):
        inp = _int(usage.get("total_tokens"))
    return TokenUsage(inp, out, cached)
