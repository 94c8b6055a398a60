"""Registers the baseline routers and the learned router by name.

==============  ==========================================================  =================
name            what                                                        options
==============  ==========================================================  =================
random          a uniformly random candidate, fixed per prompt              ``seed``
cheapest        the lowest estimated cost                                   -
best-single     the best model by train accuracy (fallback: next in rank)   -
oracle          true score - knob x true cost (reads test outcomes)         -
knn-probe       mean probe result on the k nearest probe prompts            ``k``, ``prior_weight``
cluster-probe   mean probe result in the query's k-means cluster            ``n_clusters``, ``prior_weight``
learned         gradient-boosted score from descriptor evidence             ``LEARNED_DEFAULTS``
cascade         learned, then accept or escalate by an answer check         ``folds``, ``margin``,
                (multi-round; ``routerl.routers.cascade``)                  ``max_rounds``, and
                                                                            ``LEARNED_DEFAULTS``
cascade-oracle  learned, then accept a right answer and escalate after a    ``max_rounds``,
                wrong one (reads test outcomes: the bound of ``cascade``)   ``error``, and
                                                                            ``LEARNED_DEFAULTS``
==============  ==========================================================  =================

Options arrive as keyword arguments (strings from the command line are converted here). Routers
that embed text use ``resources.embedder`` with the cache under ``resources.cache_dir``.
"""

from __future__ import annotations

from routerl.data.embeddings import get_embedder
from routerl.routers.base import Router
from routerl.routers.best_single import BestSingleRouter
from routerl.routers.cheapest import CheapestRouter
from routerl.routers import cluster_probe, knn_probe
from routerl.routers.cluster_probe import DEFAULT_CLUSTERS, ClusterProbeRouter
from routerl.routers.knn_probe import DEFAULT_K, KnnProbeRouter
from routerl.routers.cascade import CASCADE_DEFAULTS, fit_cascade_router
from routerl.routers.cascade_oracle import DEFAULT_ROUNDS, PerfectJudgeCascade
from routerl.routers.learned import LEARNED_DEFAULTS, fit_learned_router
from routerl.routers.oracle import OracleRouter
from routerl.routers.probe_index import ProbeIndex
from routerl.routers.random_router import RandomRouter
from routerl.routers.registry import RouterOptions, RouterResources, register_router


def _probe_index(resources: RouterResources, name: str):
    if resources.table is None:
        raise ValueError(f"router {name!r} needs an outcome table with probe prompts")
    embedder = get_embedder(resources.embedder, resources.cache_dir)
    return ProbeIndex.from_table(resources.table, embedder), embedder


@register_router("random")
def _random(resources: RouterResources, **options) -> Router:
    opts = RouterOptions("random", options)
    seed = opts.take("seed", int, resources.seed)
    opts.finish()
    return RandomRouter(seed)


@register_router("cheapest")
def _cheapest(resources: RouterResources, **options) -> Router:
    RouterOptions("cheapest", options).finish()
    return CheapestRouter()


@register_router("best-single")
def _best_single(resources: RouterResources, **options) -> Router:
    RouterOptions("best-single", options).finish()
    return BestSingleRouter.from_table(resources.table, resources.splits)


@register_router("oracle")
def _oracle(resources: RouterResources, **options) -> Router:
    RouterOptions("oracle", options).finish()
    return OracleRouter(resources.table)


@register_router("knn-probe")
def _knn(resources: RouterResources, **options) -> Router:
    opts = RouterOptions("knn-probe", options)
    k = opts.take("k", int, DEFAULT_K)
    weight = opts.take("prior_weight", float, knn_probe.DEFAULT_PRIOR_WEIGHT)
    opts.finish()
    index, embedder = _probe_index(resources, "knn-probe")
    return KnnProbeRouter(index, embedder, k=k, prior_weight=weight)


@register_router("cluster-probe")
def _cluster(resources: RouterResources, **options) -> Router:
    opts = RouterOptions("cluster-probe", options)
    n_clusters = opts.take("n_clusters", int, DEFAULT_CLUSTERS)
    weight = opts.take("prior_weight", float, cluster_probe.DEFAULT_PRIOR_WEIGHT)
    opts.finish()
    index, embedder = _probe_index(resources, "cluster-probe")
    return ClusterProbeRouter(index, embedder, n_clusters=n_clusters, seed=resources.seed, prior_weight=weight)


def _learned_options(opts: RouterOptions) -> dict:
    """The ``learned`` fitting options (``LEARNED_DEFAULTS``) taken from ``opts``: the routers
    that fit a ``learned`` router first (learned, cascade, cascade-oracle) all accept them."""
    return {key: opts.take(key, type(value), value) for key, value in LEARNED_DEFAULTS.items()}


@register_router("learned")
def _learned(resources: RouterResources, **options) -> Router:
    opts = RouterOptions("learned", options)
    kwargs = _learned_options(opts)
    # 0: candidates without probe results are scored by the main regressor (as before the descriptor model)
    kwargs["descriptor_model"] = opts.take("descriptor_model", int, 1) != 0
    opts.finish()
    if resources.table is None:
        raise ValueError("router 'learned' needs an outcome table to fit on")
    embedder = get_embedder(resources.embedder, resources.cache_dir)
    return fit_learned_router(resources.table, resources.splits, embedder, seed=resources.seed, **kwargs)


@register_router("cascade")
def _cascade(resources: RouterResources, **options) -> Router:
    opts = RouterOptions("cascade", options)
    kwargs = _learned_options(opts)
    kwargs["folds"] = opts.take("folds", int, CASCADE_DEFAULTS["folds"])
    kwargs["margin"] = opts.take("margin", float, CASCADE_DEFAULTS["margin"])
    kwargs["max_rounds"] = opts.take("max_rounds", int, CASCADE_DEFAULTS["max_rounds"])
    opts.finish()
    if resources.table is None:
        raise ValueError("router 'cascade' needs an outcome table to fit on")
    embedder = get_embedder(resources.embedder, resources.cache_dir)
    return fit_cascade_router(resources.table, resources.splits, embedder, seed=resources.seed, **kwargs)


@register_router("cascade-oracle")
def _cascade_oracle(resources: RouterResources, **options) -> Router:
    opts = RouterOptions("cascade-oracle", options)
    kwargs = _learned_options(opts)
    max_rounds = opts.take("max_rounds", int, DEFAULT_ROUNDS)
    error = opts.take("error", float, 0.0)
    opts.finish()
    if resources.table is None:
        raise ValueError("router 'cascade-oracle' needs an outcome table (it fits learned and reads true outcomes)")
    embedder = get_embedder(resources.embedder, resources.cache_dir)
    first = fit_learned_router(resources.table, resources.splits, embedder, seed=resources.seed, **kwargs)
    return PerfectJudgeCascade(first, resources.table, max_rounds, error, resources.seed, {"max_rounds": max_rounds, "error": error})
