"""Which router the server runs: the trained policy, a baseline by name, or the default.

``load_router(name, options, data=, splits=, checkpoint=)``:

* ``checkpoint`` (or ``name="policy"``): the policy LM, via ``routerl.policy.router.load_policy_router``
  (``options`` override its ``PolicyConfig`` fields, e.g. ``think_budget=64``);
* no name: ``default_router()``: ``$ROUTERL_DEFAULT_ROUTER`` if set, else ``policy`` when a trained
  adapter ships with the package (``routerl/assets/policy/``), else ``descriptor-score``;
* ``descriptor-score``: built directly, needs no data;
* any other name: ``routerl.routers.registry.build_router`` (as ``routerl eval`` builds them), with
  ``data``/``splits`` loaded into ``RouterResources`` for routers that read an outcome table.

Options from the command line are strings; numbers are converted before they reach the router.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from routerl.routers.base import Router
from routerl.routers.registry import RouterResources, build_router, coerce_option

DEFAULT_ROUTER = "descriptor-score"  # the fallback default: needs nothing but descriptors
POLICY_ROUTER = "policy"
DEFAULT_ROUTER_ENV = "ROUTERL_DEFAULT_ROUTER"
SHIPPED_ADAPTER = Path(__file__).resolve().parents[1] / "assets" / "policy" / "adapter_config.json"


def default_router() -> str:
    """The router used when none is named (see the module docstring)."""
    name = os.environ.get(DEFAULT_ROUTER_ENV, "").strip()
    if name:
        return name
    return POLICY_ROUTER if SHIPPED_ADAPTER.exists() else DEFAULT_ROUTER


def load_router(
    name: str | None = None,
    options: Mapping[str, str] | None = None,
    *,
    data: str | None = None,
    splits: str | None = None,
    checkpoint: str | None = None,
    seed: int = 0,
) -> Router:
    """Build the serving router; ``ValueError`` with a clear message when it cannot be built."""
    options = {k: coerce_option(v) for k, v in (options or {}).items()}
    if checkpoint and name not in (None, POLICY_ROUTER):
        raise ValueError(f"--checkpoint selects the {POLICY_ROUTER!r} router; it cannot be combined with --router {name}")
    name = POLICY_ROUTER if checkpoint else (name or default_router())
    try:
        if name == POLICY_ROUTER:
            router = _load_policy(checkpoint, options)
        elif name == DEFAULT_ROUTER:
            # Built directly: it needs no resources, and this skips importing every baseline
            # (scikit-learn, embedders) at server start.
            from routerl.routers.descriptor_score import DescriptorScoreRouter

            router = DescriptorScoreRouter(**options)
        else:
            router = build_router(name, _resources(data, splits, seed), **options)
    except TypeError as exc:
        raise ValueError(f"router {name!r} does not accept options {sorted(options)}: {exc}") from None
    if not isinstance(router, Router):
        raise ValueError(f"router {name!r} did not build a Router (got {type(router).__name__})")
    return router


def _load_policy(checkpoint: str | None, options: dict) -> Router:
    try:
        from routerl.policy.router import load_policy_router
    except ImportError as exc:
        raise ValueError(f"the policy router is not available in this installation ({exc})") from None
    if checkpoint and not Path(checkpoint).exists():
        raise FileNotFoundError(f"policy checkpoint not found: {checkpoint}")
    return load_policy_router(checkpoint, **options)


def _resources(data: str | None, splits: str | None, seed: int) -> RouterResources:
    resources = RouterResources(seed=seed)
    if data:
        from routerl.data import load_outcomes

        resources.table = load_outcomes(data)
    if splits:
        from routerl.data import Splits

        resources.splits = Splits.load(splits)
    return resources
