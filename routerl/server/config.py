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
