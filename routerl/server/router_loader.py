"""Which router the server runs: the trained policy, a baseline by name, or the default.

``load_router(name, options, data=, splits=, checkpoint=)``:

* ``checkpoint`` (or ``name="policy"``): the policy LM, via ``routerl.policy.router.load_policy_router``
  (``options`` override its ``PolicyConfig`` fields, e.g. ``think_budget=64``);
* ``descriptor-score`` (the default): built directly, needs no data;
* any other name: ``routerl.routers.registry.build_router`` (as ``routerl eval`` builds them), with
  ``data``/``splits`` loaded into ``RouterResources`` for routers that read an outcome table.

Options from the command line are strings; numbers are converted before they reach the router.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from routerl.routers.base import Router
from routerl.routers.registry import RouterResources, build_router

DEFAULT_ROUTER = "descriptor-score"
POLICY_ROUTER = "policy"


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
    options = {k: _coerce(v) for k, v in (options or {}).items()}
    if checkpoint and name not in (None, POLICY_ROUTER):
        raise ValueError(f"--checkpoint selects the {POLICY_ROUTER!r} router; it cannot be combined with --router {name}")
    name = POLICY_ROUTER if checkpoint else (name or DEFAULT_ROUTER)
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


def _coerce(value):
    """``"48"`` -> 48, ``"0.5"`` -> 0.5, ``"true"``/``"false"`` -> bool, other strings unchanged
    (non-strings pass through)."""
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
