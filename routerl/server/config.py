"""``ServerConfig``: everything ``routerl serve`` can be told, from flags or a YAML file.

A config file holds the same names as the fields below (``routerl serve --config serve.yaml``)::

    host: 0.0.0.0
    port: 50051
    workers: 8
    db: /var/lib/routerl/registry.db
    catalog: configs/catalog/default.yaml
    router: descriptor-score          # or a baseline name, or: checkpoint: runs/policy/best
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

Flags given on the command line override the file. Unknown keys are an error naming them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from routerl.routers.base import MODES
from routerl.server.requests import RequestLimits

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

    def __post_init__(self) -> None:
        def bounded(name: str, lo: float, hi: float) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not lo <= value <= hi:
                raise ValueError(f"server config: field '{name}' must be in [{lo:g}, {hi:g}], got {value!r}")

        bounded("port", 0, 65535)
        bounded("workers", 1, 1024)
        bounded("max_receive_bytes", 1024, 2**31 - 1)
        bounded("max_send_bytes", 1024, 2**31 - 1)
        bounded("grace_s", 0, 3600)
        bounded("max_query_chars", 1, 100_000_000)
        bounded("max_think_budget", 0, 1_000_000)
        bounded("max_attempts", 0, 1_000)
        bounded("max_queue", 0, 100_000)
        bounded("queue_timeout_s", 0, 3600)
        bounded("max_batch", 1, 4096)
        bounded("batch_wait_ms", 0, 10_000)
        bounded("metrics_port", 0, 65535)
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

    @property
    def request_limits(self) -> RequestLimits:
        return RequestLimits(
            max_query_chars=self.max_query_chars,
            max_think_budget=self.max_think_budget,
            max_attempts=self.max_attempts,
            default_mode=self.default_mode,
        )

    @property
    def threads(self) -> int:
        """RPC threads: every running or waiting call of both lanes, plus a few for health checks."""
        return 2 * (self.workers + self.max_queue) + 4

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
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise FileNotFoundError(f"server config not found: {path}") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a server config is a mapping of setting -> value")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown setting '{unknown[0]}' (known: {', '.join(sorted(known))})")
        if "router_options" in raw and isinstance(raw["router_options"], dict):
            raw["router_options"] = {str(k): str(v) for k, v in raw["router_options"].items()}
        try:
            return cls(**raw)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
