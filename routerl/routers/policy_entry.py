"""``policy``: the trained policy LM as a registry router (``routerl eval --router policy``).

The factory loads ``routerl.policy.router.load_policy_router``: the adapter shipped under
``routerl/assets/policy/`` (else the untrained base), or ``checkpoint=DIR``. Other options override
``PolicyConfig`` fields, e.g. ``policy:mode=think`` or ``policy:max_rounds=1`` (single call).
Torch and transformers are imported only when the router is built.
"""

from __future__ import annotations

from routerl.routers.registry import RouterResources, coerce_option, register_router


@register_router("policy")
def _build(resources: RouterResources, checkpoint: str | None = None, **options):
    from routerl.policy.router import load_policy_router

    return load_policy_router(checkpoint, **{k: coerce_option(v) for k, v in options.items()})
