"""A registry of routers by name, so the CLI, ``routerl eval`` and the server build them alike.

    @register_router("cheapest")
    def _build(resources: RouterResources, **options) -> Router: ...

    router = build_router("knn-probe", resources)

A factory reads its options through ``RouterOptions``: ``take`` converts each known one (an error
names the router, the option and the value) and ``finish`` rejects the rest, naming the options the
router takes.

``RouterResources`` carries what a router may be built from: the outcome table (only its
train/val rows may be used for fitting, and only seen models' rows; the oracle alone reads test
outcomes), the splits, a seed, the cache directory and the sentence embedder's name
(``minilm`` or ``hash``, see ``routerl.data.embeddings``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from routerl.data.outcomes import OutcomeTable
from routerl.data.splits import Splits
from routerl.routers.base import Router

RouterFactory = Callable[..., Router]
_ROUTERS: dict[str, RouterFactory] = {}


@dataclass
class RouterResources:
    table: OutcomeTable | None = None
    splits: Splits | None = None
    seed: int = 0
    cache_dir: str | None = None
    embedder: str = "minilm"


class RouterOptions:
    """The options given to one router's factory, taken one by one (see the module docstring)."""

    def __init__(self, router: str, options: dict):
        self.router = router
        self.left = dict(options)
        self.known: list[str] = []

    def take(self, key: str, kind: type, default):
        """Option ``key`` as ``kind`` (int, float or str; the CLI passes ``coerce_option`` values,
        so ``"3"`` arrives as 3), else ``default``. A bool, a fractional number for an int, or a
        value ``kind`` cannot convert raises ``ValueError`` naming the option."""
        self.known.append(key)
        if key not in self.left:
            return default
        raw = self.left.pop(key)
        bad = isinstance(raw, bool) or (kind is int and isinstance(raw, float) and not raw.is_integer())
        try:
            value = kind(raw)
        except (TypeError, ValueError, OverflowError):
            bad = True
        if bad:
            raise ValueError(f"router {self.router!r}: option '{key}' must be {kind.__name__}, got {raw!r}")
        return value

    def finish(self) -> None:
        """Raise ``ValueError`` if an option was given that no ``take`` asked for."""
        if self.left:
            takes = f"it takes {', '.join(self.known)}" if self.known else "it takes no options"
            raise ValueError(f"router {self.router!r}: unknown option {', '.join(repr(k) for k in sorted(self.left))} ({takes})")


def register_router(name: str) -> Callable[[RouterFactory], RouterFactory]:
    def wrap(factory: RouterFactory) -> RouterFactory:
        if name in _ROUTERS:
            raise ValueError(f"router {name!r} registered twice")
        _ROUTERS[name] = factory
        return factory

    return wrap


def coerce_option(value):
    """A command-line option string as a value: ``"48"`` -> 48, ``"0.5"`` -> 0.5,
    ``"true"``/``"false"`` -> bool, other strings unchanged (non-strings pass through)."""
    if not isinstance(value, str):
        return value
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def router_names() -> list[str]:
    _load_builtin()
    return sorted(_ROUTERS)


def build_router(name: str, resources: RouterResources, **options) -> Router:
    _load_builtin()
    try:
        factory = _ROUTERS[name]
    except KeyError:
        raise ValueError(f"unknown router {name!r}; known: {', '.join(sorted(_ROUTERS))}") from None
    return factory(resources, **options)


def _load_builtin() -> None:
    """Import the modules that register the built-in routers (idempotent)."""
    import routerl.routers.baselines  # noqa: F401
    import routerl.routers.descriptor_score  # noqa: F401
    import routerl.routers.policy_entry  # noqa: F401
