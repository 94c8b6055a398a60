"""Run routers over the recorded prompts of an outcome table and emit decision rows.

For each evaluation prompt, each pool and each knob of the sweep:

* pools: ``seen`` = seen models with a priced row for the prompt; ``full`` = seen + unseen;
* the router sees the pool's descriptors (built from probe rows) in table order and decides
  for all knobs at once (``decide_many``);
* a multi-round router (``max_rounds > 1``) goes on per knob: each routed model is called
  (its recorded response and true cost become an ``Attempt``) until the router accepts or
  ``max_rounds`` calls were made; the final model is the last one routed.

Rows follow ``routerl.eval.decisions`` (the protocol's decision-file format).
"""

from __future__ import annotations

import logging
import time
from typing import Iterable, Iterator, Sequence

import numpy as np

from routerl.data.outcomes import OutcomeTable
from routerl.data.splits import Splits
from routerl.descriptors.model import ModelDescriptor
from routerl.routers.base import Attempt, Decision, Query, Router
from routerl.routers.recorded import recorded_queries

log = logging.getLogger(__name__)

# 0 (best quality whatever the cost), then 10^-3 .. 10^3 at three values per decade.
DEFAULT_KNOBS: tuple[float, ...] = (0.0,) + tuple(float(f"{10 ** (e / 3):.6g}") for e in range(-9, 10))


def pool_masks(table: OutcomeTable, splits: Splits | None, pools: Sequence[str] = ("seen", "full")) -> dict[str, np.ndarray]:
    """``{pool: (M,) bool}``: the models allowed in each pool (priced; seen, or seen + unseen)."""
    seen = table.seen_mask(splits) & table.priced
    masks = {"seen": seen, "full": (seen | table.unseen_mask(splits)) & table.priced}
    unknown = [p for p in pools if p not in masks]
    if unknown:
        raise ValueError(f"unknown pool {unknown[0]!r}; expected seen and/or full")
    return {p: masks[p] for p in pools}


def evaluation_prompts(
    table: OutcomeTable, split: str = "test", limit: int | None = None, sample: int | None = None, seed: int = 0
) -> np.ndarray:
    """Indices of the prompts to evaluate: the split's prompts in table order, the first ``limit``;
    or ``sample``: a seeded uniform sample of that many (in table order), for slow routers."""
    prompts = table.prompts_in(split)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be at least 1, got {limit}")
        prompts = prompts[:limit]
    if sample is not None:
        if sample < 1:
            raise ValueError(f"--sample must be at least 1, got {sample}")
        if sample < prompts.size:
            prompts = np.sort(np.random.default_rng(seed).choice(prompts, size=sample, replace=False))
    if prompts.size == 0:
        raise ValueError(f"{table.name}: no prompts in the {split} split")
    return prompts


def _follow(
    router: Router,
    table: OutcomeTable,
    prompt: int,
    query: Query,
    candidates: Sequence[ModelDescriptor],
    knob: float,
    first: Decision,
) -> list[str]:
    """The models called for one (query, knob): the first decision, then further rounds."""
    allowed = {c.id for c in candidates}
    called: list[str] = []
    attempts: list[Attempt] = []
    decision = first
    for round_ in range(max(1, int(router.max_rounds))):
        if round_ > 0:
            decision = router.decide(query, candidates, knob, attempts)
        if decision.action == "accept":
            if not called:
                raise ValueError(f"router {router.name!r} accepted before calling any model (prompt {query.prompt_id})")
            break
        if decision.model_id not in allowed:
            raise ValueError(f"router {router.name!r} routed to {decision.model_id!r}, not in the pool of {query.prompt_id}")
        j = table.model_index(decision.model_id)
        called.append(decision.model_id)
        attempts.append(Attempt(decision.model_id, table.response(prompt, j) or "", float(table.cost[prompt, j])))
    return called


def run_router(
    router: Router,
    name: str,
    table: OutcomeTable,
    splits: Splits | None,
    prompts: np.ndarray,
    descriptors: dict[str, ModelDescriptor],
    pools: Sequence[str] = ("seen", "full"),
    knobs: Sequence[float] = DEFAULT_KNOBS,
) -> Iterator[dict]:
    """Yield decision rows of ``router`` (reported as ``name``) on ``prompts`` of ``table``.

    ``descriptors`` must describe every priced model of the pools (``build_descriptors``); a
    prompt whose pool is empty is skipped (and logged).
    """
    masks = pool_masks(table, splits, pools)
    queries = recorded_queries(table, prompts)
    prepare = getattr(router, "prepare", None)
    if callable(prepare):
        prepare(queries)
    knobs = [float(k) for k in knobs]
    available = table.available  # (P, M); a computed property, so read it once
    start, skipped = time.monotonic(), 0
    for prompt, query in zip(prompts, queries):
        for pool, mask in masks.items():
            candidates = [descriptors[table.models[j]] for j in np.flatnonzero(available[prompt] & mask)]
            if not candidates:
                skipped += 1
                continue
            decisions = router.decide_many(query, candidates, knobs)
            for knob, decision in zip(knobs, decisions):
                called = _follow(router, table, prompt, query, candidates, knob, decision)
                yield {
                    "router": name,
                    "dataset": table.name,
                    "pool": pool,
                    "knob": knob,
                    "prompt_id": query.prompt_id,
                    "models": called,
                    "final": called[-1],
                }
    if skipped:
        log.warning("%s on %s: %d (prompt, pool) pairs had an empty pool and were skipped", name, table.name, skipped)
    log.info("%s on %s: %d prompts in %.1f s", name, table.name, len(prompts), time.monotonic() - start)


def run_routers(
    routers: Iterable[tuple[str, Router]],
    table: OutcomeTable,
    splits: Splits | None,
    prompts: np.ndarray,
    descriptors: dict[str, ModelDescriptor],
    pools: Sequence[str] = ("seen", "full"),
    knobs: Sequence[float] = DEFAULT_KNOBS,
) -> Iterator[dict]:
    """``run_router`` for several (name, router) pairs in turn."""
    for name, router in routers:
        yield from run_router(router, name, table, splits, prompts, descriptors, pools, knobs)
