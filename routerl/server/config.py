"""``ServerConfig``: everything ``routerl serve`` can be told, from flags or a YAML file.

A config file holds the same names as the fields below (``routerl serve --config serve.yaml``)::

    host: 0.0.0.0
    port: 50051
    workers: 8
    db: /var/lib/routerl/registry.db
    catalog: configs/catalog/default.yaml
    router: descriptor-score          # default: the shipped policy; or a baseline name, or: checkpoint: runs/policy_smollm2/final
    router_options: {prior: 0.5}
    max_query_chars: 100000
    max_queue: 32                     # calls waiting for a slot, per lane; more: RESOURCE_EXHAUSTED
    queue_timeout_s: 2.0              # longest wait for a slot; then RESOURCE_EXHAUSTED
    tls_cert: /etc/routerl/server.crt # with tls_key: serve TLS only
    tls_key: /etc/routerl/server.key
    auth_token_env: ROUTERL_TOKEN     # or auth_token_file: a path (never the token itself)
    admin_token_env: ROUTERL_ADMIN_TOKEN
    metrics_port: 9464                # Prometheus /metrics (0: off)
    access_log: /var/log/routerl/access.jsonl   # "-": stderr, "off": none
    # Complete: calls models through their registered endpoints
    complete_workers: 8               # Complete calls running at once (their own lane)
    complete_max_rounds: 2            # model-calling rounds per request (requests may ask fewer)
    complete_budget_usd: 0.05         # per-request spend cap (requests may ask less); unset: none
    complete_timeout_s: 120           # per-request time limit (the caller's deadline may be shorter)
    provider_timeout_s: 60            # per model call
    provider_retries: 3               # tries per call on 429/5xx/connection errors
    provider_backoff_s: 0.5           # first retry wait, doubled per retry
    key_budget_usd: 10.0              # every caller key's budget (unset: unlimited)
    key_budgets: {tenant-a: 50.0}     # budgets of named keys
    key_budget_policy: cheapest       # a key past its budget: cheapest acceptable model, or refuse
    key_budget_min_score: 0.6         # "acceptable" for the cheapest policy (overall probe score)

Flags given on the command line override the file. Unknown keys are an error naming them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from os import PathLike
from pathlib import Path
from typing import Any, Mapping

from routerl.routers.base import MODES
from routerl.server.complete import KEY_ID_RE, CompleteSettings
from routerl.server.requests import RequestLimits
from routerl.yaml_numbers import read_yaml_file

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CATALOG = REPO / "configs" / "catalog" / "default.yaml"
DEFAULT_PORT = 50051
MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one server process (see the module docstring for the YAML form).

    ``port`` 0 lets the OS pick a free port (the real one is printed). ``catalog`` seeds a *new*
    registry database only; ``None`` means the default catalog when it exists.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = 8
    max_receive_bytes: int = 4 * MiB
    max_send_bytes: int = 4 * MiB
    db: str = "routerl.db"
    catalog: str | None = None
    router: str | None = None
    router_options: dict[str, str] = field(default_factory=dict)
    checkpoint: str | None = None
    data: str | None = None
    splits: str | None = None
    grace_s: float = 10.0
    max_query_chars: int = 100_000
    max_think_budget: int = 4_096
    max_attempts: int = 8
    default_mode: str = "balanced"
    # Load limits, per lane (Route; registry calls): calls running at once is ``workers``.
    max_queue: int = 32
    queue_timeout_s: float = 2.0
    # Micro-batching for routers with decide_batch (max_batch 1: off).
    max_batch: int = 16
    batch_wait_ms: float = 2.0
    # Security: TLS, bearer tokens (from environment variables or files, never inline).
    tls_cert: str | None = None
    tls_key: str | None = None
    auth_token_env: str | None = None
    auth_token_file: str | None = None
    admin_token_env: str | None = None
    admin_token_file: str | None = None
    # Observability.
    metrics_port: int = 0
    metrics_host: str | None = None
    access_log: str = "-"
    log_queries: bool = False
    # Complete (answering through the models' endpoints; see routerl.server.complete).
    complete_workers: int = 8
    complete_max_rounds: int = 2
    complete_budget_usd: float | None = None
    complete_timeout_s: float = 120.0
    provider_timeout_s: float = 60.0
    provider_retries: int = 3
    provider_backoff_s: float = 0.5
    provider_max_tokens: int | None = None
    key_budget_usd: float | None = None
    key_budgets: dict[str, float] = field(default_factory=dict)
    key_budget_policy: str = "cheapest"
    key_budget_min_score: float = 0.0

    def __post_init__(self) -> None:
        self._check_numbers()
        self._check_texts()
        if not isinstance(self.key_budgets, dict):
            raise ValueError("server config: field 'key_budgets' must be a mapping of key id -> USD")
        for key, value in self.key_budgets.items():
            if not isinstance(key, str) or not KEY_ID_RE.fullmatch(key):
                raise ValueError(f"server config: field 'key_budgets': {key!r} is not a key id (1 to 64 letters, digits or ._:@/+-)")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"server config: field 'key_budgets.{key}' must be a finite number of USD >= 0, got {value!r}")
        if self.key_budget_policy not in ("cheapest", "refuse"):
            raise ValueError(f"server config: field 'key_budget_policy' must be cheapest or refuse, got {self.key_budget_policy!r}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("server config: fields 'tls_cert' and 'tls_key' go together")
        for name in ("auth_token", "admin_token"):
            if getattr(self, f"{name}_env") and getattr(self, f"{name}_file"):
                raise ValueError(f"server config: give '{name}_env' or '{name}_file', not both")
        if not isinstance(self.access_log, str) or not self.access_log:
            raise ValueError("server config: field 'access_log' must be '-', 'off' or a file path")
        if not isinstance(self.log_queries, bool):
            raise ValueError("server config: field 'log_queries' must be true or false")
        if self.default_mode not in MODES:
            raise ValueError(f"server config: field 'default_mode' must be one of {', '.join(MODES)}, got {self.default_mode!r}")
        if not isinstance(self.host, str) or not self.host:
            raise ValueError("server config: field 'host' must be a host name or address")
        if not isinstance(self.router_options, dict):
            raise ValueError("server config: field 'router_options' must be a mapping")

    def _check_numbers(self) -> None:
        """Every numeric field: its type (an integer field takes no fraction, and no field takes a
        boolean) and its bounds."""

        def bounded(name: str, lo: float, hi: float) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not lo <= value <= hi:
                raise ValueError(f"server config: field '{name}' must be in [{lo:g}, {hi:g}], got {value!r}")

        def integer(name: str, lo: int, hi: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"server config: field '{name}' must be an integer, got {value!r}")
            bounded(name, lo, hi)

        integer("port", 0, 65535)
        integer("workers", 1, 1024)
        integer("max_receive_bytes", 1024, 2**31 - 1)
        integer("max_send_bytes", 1024, 2**31 - 1)
        bounded("grace_s", 0, 3600)
        integer("max_query_chars", 1, 100_000_000)
        integer("max_think_budget", 0, 1_000_000)
        integer("max_attempts", 0, 1_000)
        integer("max_queue", 0, 100_000)
        bounded("queue_timeout_s", 0, 3600)
        integer("max_batch", 1, 4096)
        bounded("batch_wait_ms", 0, 10_000)
        integer("metrics_port", 0, 65535)
        integer("complete_workers", 1, 1024)
        integer("complete_max_rounds", 1, 64)
        bounded("complete_timeout_s", 0.001, 86_400)
        bounded("provider_timeout_s", 0.001, 86_400)
        integer("provider_retries", 1, 100)
        bounded("provider_backoff_s", 0, 3600)
        bounded("key_budget_min_score", 0, 1)
        for name in ("complete_budget_usd", "key_budget_usd"):
            if getattr(self, name) is not None:
                bounded(name, 0, 1e12)
        if self.provider_max_tokens is not None:
            integer("provider_max_tokens", 1, 10_000_000)

    def _check_texts(self) -> None:
        """Every text field is a string (a path field may be a ``Path`` too); ``db`` is required,
        the others may be unset."""

        def text(name: str, what: str, *, path: bool = False, required: bool = False) -> None:
            value = getattr(self, name)
            if value is None and not required:
                return
            kinds = (str, PathLike) if path else str
            if not isinstance(value, kinds) or (required and not str(value)):
                raise ValueError(f"server config: field '{name}' must be {what}, got {value!r}")

        text("db", "a file path", path=True, required=True)
        for name in ("catalog", "checkpoint", "data", "splits", "tls_cert", "tls_key", "auth_token_file", "admin_token_file"):
            text(name, "a file path", path=True)
        for name in ("auth_token_env", "admin_token_env"):
            text(name, "an environment variable name")
        text("router", "a router name")
        text("metrics_host", "a host name or address")
        text("default_mode", f"one of {', '.join(MODES)}", required=True)
        text("key_budget_policy", "cheapest or refuse", required=True)

    @property
    def request_limits(self) -> RequestLimits:
        return RequestLimits(
            max_query_chars=self.max_query_chars,
            max_think_budget=self.max_think_budget,
            max_attempts=self.max_attempts,
            default_mode=self.default_mode,
        )

    @property
    def complete_settings(self) -> CompleteSettings:
        return CompleteSettings(
            max_rounds=self.complete_max_rounds,
            budget_usd=self.complete_budget_usd,
            timeout_s=self.complete_timeout_s,
            provider_timeout_s=self.provider_timeout_s,
            provider_retries=self.provider_retries,
            provider_backoff_s=self.provider_backoff_s,
            provider_max_tokens=self.provider_max_tokens,
            key_budget_usd=self.key_budget_usd,
            key_budgets=dict(self.key_budgets),
            key_budget_policy=self.key_budget_policy,
            key_budget_min_score=self.key_budget_min_score,
        )

    @property
    def threads(self) -> int:
        """RPC threads: every running or waiting call of the three lanes (Route, registry,
        Complete), plus a few for health checks."""
        return 2 * (self.workers + self.max_queue) + self.complete_workers + self.max_queue + 4

    def catalog_path(self) -> Path | None:
        """The catalog to seed a new registry with (the default one when none is set and it exists)."""
        if self.catalog:
            return Path(self.catalog)
        return DEFAULT_CATALOG if DEFAULT_CATALOG.exists() else None

    def with_overrides(self, overrides: Mapping[str, Any]) -> "ServerConfig":
        """A copy with the non-``None`` values of ``overrides`` applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_file(cls, path: str | Path) -> "ServerConfig":
        path = Path(path)
        raw = read_yaml_file(path, "server config") or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a server config is a mapping of setting -> value")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown setting '{unknown[0]}' (known: {', '.join(sorted(known))})")
        if "router_options" in raw and isinstance(raw["router_options"], dict):
            raw["router_options"] = {str(k): str(v) for k, v in raw["router_options"].items()}
        if "key_budgets" in raw and isinstance(raw["key_budgets"], dict):
            raw["key_budgets"] = {str(k): v for k, v in raw["key_budgets"].items()}
        try:
            return cls(**raw)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
