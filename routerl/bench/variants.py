"""Serving variants of a policy, in process: decision latency and agreement with a reference.

    python -m routerl.bench.variants                    # float32 reference, the shipped settings, int8
    python -m routerl.bench.variants --variant dtype=float32,action_scoring=full --variant dtype=int8,engine=hf
    python -m routerl.bench.variants --checkpoint runs/policy_smollm2/final --rounds 3
    python -m routerl.bench.variants --variant engine=fused --thread worker   # as routerl serve runs it

Each variant is a set of ``PolicyConfig`` overrides of the same checkpoint (default: the shipped
policy). Every variant decides the same requests: the 24 queries of ``routerl bench`` x knobs 0,
0.1 and 1 on its 8-model pool (first calls), then the same queries with one earlier attempt (the
first variant's choice, answered ``"The answer is 4."``: accept or escalate). Printed in one run,
per variant: decision p50 / p90 (in process: no gRPC; the evidence router's query embedding is
included, so the first pass over the queries is timed too, like new queries), the speed-up over
the first variant, how often it makes the first variant's decision (same action and model) with
the largest probability difference over every candidate of the ranking, the second rounds' own
p50 and turn-cache hits (a hit: the second round continues the state its first call kept;
``turn_cache_entries``), and the prompt's cached
prefix and per-request tokens (first calls; a ``prompt_style`` variant shows another style's
length, not a style the checkpoint was trained on).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from typing import Sequence

# float32 with full action scoring on the transformers forward (the reference), the shipped serving
# settings, and int8 (which the fused engine does not run).
DEFAULT_VARIANTS = ("dtype=float32,action_scoring=full,engine=hf", "dtype=bfloat16,action_scoring=prefix", "dtype=int8,action_scoring=prefix,engine=hf")
KNOBS = (0.0, 0.1, 1.0)


def parse_variant(text: str) -> dict:
    """``"dtype=int8,action_scoring=prefix"`` -> ``{"dtype": "int8", "action_scoring": "prefix"}``."""
    from routerl.cli.client_args import key_values
    from routerl.routers.registry import coerce_option

    return key_values([p.strip() for p in text.split(",") if p.strip()], "--variant", coerce_option)


def requests():
    """``(pool, [(query, knob), ...])``: the bench's 8-model pool and its queries x ``KNOBS``."""
    from routerl.bench.service import DEFAULT_CATALOG, POOL_SIZE, QUERIES
    from routerl.descriptors.catalog import load_catalog
    from routerl.routers.base import Query

    pool = load_catalog(DEFAULT_CATALOG)[:POOL_SIZE]
    return pool, [(Query(text=t, domain=d), k) for t, d in QUERIES for k in KNOBS]


THREADINGS = ("main", "worker", "worker-two-teams")


def run(checkpoint: str | None, variants: Sequence[dict], rounds: int = 2, out=print, threading_mode: str = "main") -> list[dict]:
    """``threading_mode``: ``main`` loads and decides in the main thread; ``worker`` as
    ``routerl serve`` does (the main thread, at one OpenMP thread, loads; a worker thread calls
    ``start_worker`` and decides); ``worker-two-teams`` the same with the main thread loading at
    torch's default thread count, so that two OpenMP teams exist (the server before
    ``start_worker``)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    if threading_mode not in THREADINGS:
        raise ValueError(f"--thread must be one of {', '.join(THREADINGS)}, got {threading_mode!r}")
    if threading_mode == "main":
        return _run(checkpoint, variants, rounds, out, lambda fn: fn())
    if threading_mode == "worker":
        torch.set_num_threads(1)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-worker") as worker:
        return _run(checkpoint, variants, rounds, out, lambda fn: worker.submit(fn).result(), in_worker=True)


def _run(checkpoint, variants, rounds, out, in_thread, in_worker: bool = False) -> list[dict]:
    """``in_thread(fn)`` runs ``fn`` where the decisions are made (and returns its result)."""
    from routerl.policy.router import load_policy_router
    from routerl.routers.base import Attempt

    pool, calls = requests()
    ref: list | None = None  # the first variant's decisions: first calls, then second rounds
    results: list[dict] = []
    for opts in variants:
        router = load_policy_router(checkpoint, **opts)
        if in_worker:
            in_thread(router.start_worker)

        def decide_all(router=router, first_calls=ref):
            times, decisions = [], []
            for _ in range(rounds):  # the first pass embeds every query for the first time
                decisions = []
                for query, knob in calls:
                    t = time.perf_counter()
                    decisions.append(router.decide(query, pool, knob))
                    times.append(time.perf_counter() - t)
            firsts = (first_calls or decisions)[: len(calls)]
            for (query, knob), first in zip(calls, firsts):
                t = time.perf_counter()
                decisions.append(router.decide(query, pool, knob, [Attempt(first.model_id, "The answer is 4.", 0.001)]))
                times.append(time.perf_counter() - t)
            return times, decisions

        times, decisions = in_thread(decide_all)
        if ref is None:
            ref = decisions
        same = sum((a.action, a.model_id) == (b.action, b.model_id) for a, b in zip(decisions, ref))
        dp = max(abs(p - dict(b.ranking).get(m, 0.0)) for a, b in zip(decisions, ref) for m, p in a.ranking)
        row = {
            "variant": ",".join(f"{k}={v}" for k, v in opts.items()) or "(checkpoint settings)",
            "p50_ms": 1000 * statistics.median(times),
            "p90_ms": 1000 * sorted(times)[int(0.9 * (len(times) - 1))],
            "second_p50_ms": 1000 * statistics.median(times[-len(calls) :]),
            "turn_hits": getattr(router.turn_cache, "hits", 0),
            "same": same,
            "n": len(decisions),
            "max_dp": dp,
            "prefix_tokens": statistics.mean(router.request_tokens(q, pool, k)[0] for q, k in calls),
            "request_tokens": statistics.mean(router.request_tokens(q, pool, k)[1] for q, k in calls),
        }
        results.append(row)
        del router
        gc.collect()  # the next variant loads its model into a clean heap
    base = results[0]["p50_ms"]
    out(f"{len(calls)} first calls x {rounds} passes + {len(calls)} second rounds per variant, 8-model pool, in process"
        + (" (decisions in a worker thread)" if in_worker else ""))
    out(
        "| variant | decision p50 ms | p90 ms | p50 speed-up | second rounds p50 ms | turn-cache hits | same decision as the first "
        "| max abs prob. diff | cached prefix tokens | tokens run per request (first calls, mean) |"
    )
    out("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        out(
            f"| {r['variant']} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {base / r['p50_ms']:.2f}x | {r['second_p50_ms']:.1f} | {r['turn_hits']} "
            f"| {r['same']}/{r['n']} | {r['max_dp']:.3g} | {r['prefix_tokens']:.0f} | {r['request_tokens']:.1f} |"
        )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routerl.bench.variants", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="adapter directory (default: the shipped policy)")
    parser.add_argument("--variant", action="append", default=[], metavar="K=V[,K=V]", help="PolicyConfig overrides (repeatable; the first is the reference)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the first calls (default 2)")
    parser.add_argument("--thread", default="main", choices=THREADINGS, help="where decisions run (default main; worker = as routerl serve)")
    args = parser.parse_args(argv)
    from routerl.cli import CliError
    from routerl.policy.router import resolved_policy_config

    try:
        variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
        if args.rounds < 1:
            raise ValueError("--rounds must be at least 1")
        for v in variants:  # every variant's options are checked before the first one runs for minutes
            try:
                resolved_policy_config(args.checkpoint, **v)
            except ValueError as exc:
                raise ValueError(f"--variant {','.join(f'{k}={x}' for k, x in v.items())}: {exc}") from None
        run(args.checkpoint, variants, args.rounds, threading_mode=args.thread)
    except (ValueError, FileNotFoundError, CliError) as exc:
        print(f"routerl.bench.variants: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
