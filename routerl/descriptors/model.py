"""The validated ``ModelDescriptor``.

A descriptor is all a router may know about a candidate: prices, latency, context window, and
evidence from the probe set (per-domain sample scores, and per-probe-prompt results so that
nearest-probe routers can estimate the model's score on a new query). A model registered at run
time supplies exactly these fields, so every router treats seen and unseen models alike.

Validation rejects NaN/negative/absurd prices, scores outside [0, 1], empty or malformed ids and
absurd sizes, with a ``DescriptorError`` whose ``field`` names the offending field. An endpoint is
checked (``Endpoint.check``) where a new one comes in, not when a descriptor is built, so that an
endpoint stored before that check still reads back.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+\-]*")  # the whole id (fullmatch: no final newline)
MAX_ID_LEN = 128
MAX_SHOWN_ID_CHARS = 80  # how much of an overlong id errors and logs repeat
MAX_PRICE_PER_MTOK = 10_000.0
MAX_LATENCY_MS = 3_600_000.0
MAX_CONTEXT_WINDOW = 100_000_000
MAX_DOMAINS = 256
MAX_DOMAIN_LEN = 64
MAX_PROBE_RESULTS = 100_000
MAX_DESCRIPTION_LEN = 4_096
MAX_TAGS = 32
MAX_TAG_LEN = 64
MAX_OUTPUT_TOKENS = 1_000_000
MAX_URL_LEN = 2_048
MAX_MODEL_NAME_LEN = 256
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")  # an environment variable's name, whole


class DescriptorError(ValueError):
    """An invalid descriptor: ``field`` names the field at fault (e.g. ``input_price_per_mtok``),
    ``message`` says what is wrong with it, and ``where`` (optional) whose field it is, e.g. a
    catalog file and entry; it leads the text: ``c.yaml: models[0] (a): field 'id': ...``."""

    def __init__(self, field_name: str, message: str, where: str = ""):
        text = f"field '{field_name}': {message}"
        super().__init__(f"{where}: {text}" if where else text)
        self.field = field_name
        self.message = message
        self.where = where

    def within(self, where: str) -> "DescriptorError":
        """The same error said of ``where`` (put before any place it already names)."""
        return DescriptorError(self.field, self.message, f"{where}: {self.where}" if self.where else where)


def shown_id(value: str) -> str:
    """A model id as error messages and log lines repeat it: whole when it is no longer than an id
    may be, else its first ``MAX_SHOWN_ID_CHARS`` characters and ``...``."""
    return value if len(value) <= MAX_ID_LEN else value[:MAX_SHOWN_ID_CHARS] + "..."


@dataclass(frozen=True)
class Endpoint:
    """How to reach a model: an OpenAI-compatible base URL, the provider's model name and the
    name of the environment variable that holds its key (never the key itself)."""

    base_url: str = ""
    model_name: str = ""
    api_key_env: str = ""

    def check(self) -> None:
        """Raise a ``DescriptorError`` on ``endpoint.base_url``, ``endpoint.model_name`` or
        ``endpoint.api_key_env`` unless a provider can be built from this endpoint: an http(s)
        URL with a host, a model name, and an environment variable's name (or none: a server
        without keys). The rules ``routerl.live.provider.ChatProvider`` applies when the server
        starts, applied when the endpoint is registered instead."""
        _check_base_url(self.base_url)
        name = self.model_name
        if not isinstance(name, str) or not name.strip():
            raise DescriptorError("endpoint.model_name", "is required")
        if len(name) > MAX_MODEL_NAME_LEN or not name.isprintable():
            raise DescriptorError("endpoint.model_name", f"must be at most {MAX_MODEL_NAME_LEN} printable characters")
        env = self.api_key_env
        if not isinstance(env, str) or (env and not ENV_NAME_PATTERN.fullmatch(env)):
            shown = env[:MAX_SHOWN_ID_CHARS] if isinstance(env, str) else env
            raise DescriptorError("endpoint.api_key_env", "must be empty or an environment variable's name (at most 256 "
                                  f"letters, digits and _, not starting with a digit), got {shown!r}")


def _check_base_url(url: Any) -> None:
    if not isinstance(url, str) or not url:
        raise DescriptorError("endpoint.base_url", "is required (an http(s) URL)")
    if len(url) > MAX_URL_LEN:
        raise DescriptorError("endpoint.base_url", f"must be at most {MAX_URL_LEN} characters, got {len(url)}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        parts = None
    blank = any(ch.isspace() or not ch.isprintable() for ch in url)
    if parts is None or blank or not url.startswith(("http://", "https://")) or not parts.hostname:
        raise DescriptorError("endpoint.base_url", f"must be an http(s) URL, got {url!r}")


def _finite(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DescriptorError(name, f"must be a number, got {value!r}")
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        raise DescriptorError(name, f"must be finite, got {value}")
    if value < lo or value > hi:
        raise DescriptorError(name, f"must be in [{lo:g}, {hi:g}], got {value:g}")
    return value


@dataclass(frozen=True)
class ModelDescriptor:
    """What a router knows about one candidate model.

    Attributes:
        id: unique model id (letters, digits and ``._:@/+-``; at most 128 characters).
        input_price_per_mtok, output_price_per_mtok: USD per million tokens (0 = free).
        latency_ms: typical time to a full answer, 0 when unknown.
        context_window: tokens, 0 when unknown.
        sample_scores: domain -> mean score on that domain's probe prompts, in [0, 1].
        sample_counts: domain -> number of probe prompts behind ``sample_scores``.
        probe_results: probe prompt id -> score in [0, 1] (the per-prompt evidence that
            nearest-probe routers use); empty when only per-domain scores are known.
        mean_output_tokens: typical answer length, for the cost estimate (0 = unknown, then 300).
        description, tags: free text shown to operators (and optionally to the policy).
        endpoint: how to call the model (optional).
    """

    id: str
    input_price_per_mtok: float
    output_price_per_mtok: float
    latency_ms: float = 0.0
    context_window: int = 0
    sample_scores: dict[str, float] = field(default_factory=dict)
    sample_counts: dict[str, int] = field(default_factory=dict)
    probe_results: dict[str, float] = field(default_factory=dict)
    mean_output_tokens: float = 0.0
    description: str = ""
    tags: tuple[str, ...] = ()
    endpoint: Endpoint | None = None

    DEFAULT_OUTPUT_TOKENS = 300.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise DescriptorError("id", "must be a non-empty string")
        if len(self.id) > MAX_ID_LEN:
            raise DescriptorError("id", f"must be at most {MAX_ID_LEN} characters, got {len(self.id)}")
        if not ID_PATTERN.fullmatch(self.id):
            raise DescriptorError("id", f"may hold only letters, digits and ._:@/+- (and start with a letter or digit), got {self.id!r}")
        _finite("input_price_per_mtok", self.input_price_per_mtok, 0.0, MAX_PRICE_PER_MTOK)
        _finite("output_price_per_mtok", self.output_price_per_mtok, 0.0, MAX_PRICE_PER_MTOK)
        _finite("latency_ms", self.latency_ms, 0.0, MAX_LATENCY_MS)
        _finite("mean_output_tokens", self.mean_output_tokens, 0.0, MAX_OUTPUT_TOKENS)
        if isinstance(self.context_window, bool) or not isinstance(self.context_window, int):
            raise DescriptorError("context_window", f"must be an integer, got {self.context_window!r}")
        if not 0 <= self.context_window <= MAX_CONTEXT_WINDOW:
            raise DescriptorError("context_window", f"must be in [0, {MAX_CONTEXT_WINDOW}], got {self.context_window}")
        self._check_scores("sample_scores", self.sample_scores, MAX_DOMAINS, MAX_DOMAIN_LEN)
        self._check_scores("probe_results", self.probe_results, MAX_PROBE_RESULTS, 256)
        if not isinstance(self.sample_counts, dict):
            raise DescriptorError("sample_counts", "must be a mapping of domain -> count")
        for key, value in self.sample_counts.items():
            if key not in self.sample_scores:
                raise DescriptorError(f"sample_counts.{key}", "has no matching sample_scores entry")
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DescriptorError(f"sample_counts.{key}", f"must be a non-negative integer, got {value!r}")
        if not isinstance(self.description, str) or len(self.description) > MAX_DESCRIPTION_LEN:
            raise DescriptorError("description", f"must be a string of at most {MAX_DESCRIPTION_LEN} characters")
        if not isinstance(self.tags, tuple) or len(self.tags) > MAX_TAGS:
            raise DescriptorError("tags", f"must be at most {MAX_TAGS} tags")
        for tag in self.tags:
            if not isinstance(tag, str) or not tag.strip() or len(tag) > MAX_TAG_LEN:
                raise DescriptorError("tags", f"each tag must be a non-empty string of at most {MAX_TAG_LEN} characters, got {tag!r}")
        if self.endpoint is not None and not isinstance(self.endpoint, Endpoint):
            raise DescriptorError("endpoint", "must be an Endpoint")

    @staticmethod
    def _check_scores(name: str, scores: Any, max_items: int, max_key_len: int) -> None:
        if not isinstance(scores, dict):
            raise DescriptorError(name, "must be a mapping of key -> score")
        if len(scores) > max_items:
            raise DescriptorError(name, f"must have at most {max_items} entries, got {len(scores)}")
        for key, value in scores.items():
            if not isinstance(key, str) or not key.strip() or len(key) > max_key_len:
                raise DescriptorError(name, f"keys must be non-empty strings of at most {max_key_len} characters, got {key!r}")
            _finite(f"{name}.{key}", value, 0.0, 1.0)

    # -- derived -------------------------------------------------------------------------------
    @property
    def output_tokens(self) -> float:
        return self.mean_output_tokens or self.DEFAULT_OUTPUT_TOKENS

    def estimate_cost_usd(self, prompt_tokens: float) -> float:
        """Expected cost of one call: prices x (prompt tokens, typical answer tokens)."""
        return (self.input_price_per_mtok * prompt_tokens + self.output_price_per_mtok * self.output_tokens) / 1e6

    def overall_score(self) -> float | None:
        """Probe-count-weighted mean of the per-domain sample scores (None without evidence)."""
        if self.probe_results:
            return sum(self.probe_results.values()) / len(self.probe_results)
        if not self.sample_scores:
            return None
        weights = {d: self.sample_counts.get(d, 1) for d in self.sample_scores}
        total = sum(weights.values())
        return sum(self.sample_scores[d] * weights[d] for d in self.sample_scores) / max(total, 1)

    def with_changes(self, **changes: Any) -> "ModelDescriptor":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tags"] = list(self.tags)
        if self.endpoint is None:
            out.pop("endpoint")
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> "ModelDescriptor":
        """Build from a plain mapping (YAML/JSON); unknown keys are an error naming them."""
        if not isinstance(raw, dict):
            raise DescriptorError("model", f"must be a mapping, got {type(raw).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise DescriptorError(unknown[0], f"unknown field (known: {', '.join(sorted(known))})")
        for required in ("id", "input_price_per_mtok", "output_price_per_mtok"):
            if required not in raw:
                raise DescriptorError(required, "is required")
        data = dict(raw)
        if "tags" in data:
            tags = data["tags"]
            if not isinstance(tags, (list, tuple)):
                raise DescriptorError("tags", "must be a list of strings")
            data["tags"] = tuple(tags)
        for key in ("sample_scores", "probe_results", "sample_counts"):
            if data.get(key) is None:
                data.pop(key, None)
        if isinstance(data.get("context_window"), float) and data["context_window"].is_integer():
            data["context_window"] = int(data["context_window"])
        endpoint = data.get("endpoint")
        if endpoint is not None:
            if not isinstance(endpoint, dict):
                raise DescriptorError("endpoint", "must be a mapping with base_url, model_name, api_key_env")
            bad = sorted(set(endpoint) - {"base_url", "model_name", "api_key_env"})
            if bad:
                raise DescriptorError(f"endpoint.{bad[0]}", "unknown field")
            data["endpoint"] = Endpoint(**{k: str(v) for k, v in endpoint.items()})
        return cls(**data)
