"""``policy``: the trained policy LM as a registry router (``routerl eval --router policy``).

The factory loads ``routerl.policy.router.load_policy_router``: the adapter shipped under
``routerl/assets/policy/`` (else the untrained base), or ``checkpoint=DIR``. Other options override
``PolicyConfig`` fields, e.g. ``policy:mode=think`` or ``policy:max_rounds=1`` (single call).
Torch and transformers are imported only when the router is built.

``evidence``: the policy's evidence router alone, as a single-call router (the best estimated
``score - knob x cost``, no LM): what the policy's shortlist puts first, so ``routerl eval
--router policy,evidence`` shows what the LM adds to it. ``checkpoint=DIR`` reads another
checkpoint's ``evidence.npz`` (and ``learned.npz``).
"""

from __future__ import annotations

from routerl.routers.registry import RouterOptions, RouterResources, coerce_option, register_router


@register_router("policy")
def _build(resources: RouterResources, checkpoint: str | None = None, **options):
    from routerl.policy.router import load_policy_router

    return load_policy_router(checkpoint, **{k: coerce_option(v) for k, v in options.items()})


@register_router("evidence")
def _evidence(resources: RouterResources, **options):
    from routerl.data.embeddings import get_embedder
    from routerl.policy.router import load_evidence, policy_source

    opts = RouterOptions("evidence", options)
    checkpoint = opts.take("checkpoint", str, None)
    opts.finish()
    source = policy_source(checkpoint)
    router = load_evidence(source)
    if router is None:
        raise ValueError(f"router 'evidence': {source} has no evidence router (no evidence.npz: not a shortlist-mode checkpoint)")
    router.embedder = get_embedder(resources.embedder, resources.cache_dir)  # the evaluation's embedding cache
    router.name = "evidence"
    return router
