"""Paired bootstrap of AIQ differences: is one router ahead of another by more than sampling noise?

    python -m routerl.eval.paired runs/eval-policy-all \\
        --data ../shared/data/zeroeval.jsonl.gz --data ../shared/data/mmlupro.jsonl.gz \\
        --splits ../shared/data/splits.json --router policy --against evidence,learned,knn-probe,cluster-probe

Reads ``routerl eval`` decision files (runs' directories or their ``decisions.jsonl``; a router
found in several is read from the first that has it, so two runs on the same prompts and knobs
can be compared). Per
dataset and pool where both routers were evaluated on the same prompts and knobs, the evaluated
prompts are resampled with replacement ``--resamples`` times (seeded); each resample gives both
routers' knob points (mean score and mean cost of the resampled prompts) and their AIQ, with the
cost range of the whole sample (``metrics.cost_range``: the protocol's range, not something a
router's decisions move). The same resample serves both routers, so the difference is paired:
what the two routers decide alike cancels, and only the prompts where they differ add noise.

``--unseen-gain`` compares instead each router's gain from the unseen models, its full-pool AIQ
minus its seen-pool AIQ on the same resampled prompts (the protocol's UnseenCapture numerator).

Printed per (dataset, pool, baseline): both AIQs (or gains) on the evaluated prompts, their difference, the
bootstrap standard error and 95% percentile interval of the difference, and the share of
resamples in which ``--router`` is ahead. An interval that contains 0 means the evaluated prompts
cannot tell the two routers apart. It measures prompt-sampling noise only: the models' recorded
answers and the fitted routers are taken as given.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from routerl.eval.frontier import aiq
from routerl.routers.base import USD_SCALE


@dataclass(frozen=True)
class PairedDifference:
    """``router`` minus ``baseline`` on one dataset and pool (AIQs on the evaluated prompts)."""

    dataset: str
    pool: str
    router: str
    baseline: str
    n_prompts: int
    aiq_router: float
    aiq_baseline: float
    se: float
    low: float
    high: float
    ahead: float  # share of resamples where the router's AIQ is higher

    @property
    def diff(self) -> float:
        return self.aiq_router - self.aiq_baseline


def _matrices(curve: dict[float, dict], prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, costs)``, each ``(K, N)``: per knob (sorted) and prompt, the final model's score
    and the summed cost of the calls in USD per 1k queries."""
    knobs = sorted(curve)
    scores = np.array([[curve[k][p][0] for p in prompts] for k in knobs])
    costs = np.array([[curve[k][p][1] for p in prompts] for k in knobs]) * USD_SCALE
    return scores, costs


def _aiqs(weights: np.ndarray, scores: np.ndarray, costs: np.ndarray, c_max: float) -> np.ndarray:
    """``(B,)`` AIQ of each resample: ``weights`` ``(B, N)`` = how often each prompt was drawn."""
    n = weights.sum(axis=1, keepdims=True)
    acc = weights @ scores.T / n  # (B, K)
    cost = weights @ costs.T / n
    return np.array([aiq(c, a, c_max) for c, a in zip(cost, acc)])


def resampled_aiqs(
    matrices: Sequence[tuple[np.ndarray, np.ndarray]], c_max: float, resamples: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """AIQs of several ``(scores, costs)`` pairs (``_matrices``, each ``(K, N)`` over the same ``N``
    prompts) on the prompts as given, ``(R,)``, and on ``resamples`` resamples of the prompts, the
    same draws for every pair: ``(resamples, R)``."""
    if not matrices or len({m[0].shape[1] for m in matrices}) != 1 or matrices[0][0].shape[1] == 0:
        raise ValueError("every curve needs decisions on the same, non-empty set of prompts")
    if resamples < 2:
        raise ValueError(f"resamples must be at least 2, got {resamples}")
    n = matrices[0][0].shape[1]
    point = np.array([aiq(costs.mean(axis=1), scores.mean(axis=1), c_max) for scores, costs in matrices])
    rng = np.random.default_rng(seed)
    draws_out = []
    for start in range(0, resamples, 250):  # (250, N) draw counts at a time
        draws = rng.integers(0, n, size=(min(250, resamples - start), n))
        weights = np.stack([np.bincount(d, minlength=n) for d in draws]).astype(float)
        draws_out.append(np.stack([_aiqs(weights, scores, costs, c_max) for scores, costs in matrices], axis=1))
    return point, np.concatenate(draws_out)


def _summary(point_a: float, point_b: float, d: np.ndarray) -> tuple[float, float, float, float, float, float]:
    low, high = np.percentile(d, [2.5, 97.5])
    return float(point_a), float(point_b), float(d.std(ddof=1)), float(low), float(high), float(np.mean(d > 0))


def paired_bootstrap(
    scores_a: np.ndarray, costs_a: np.ndarray, scores_b: np.ndarray, costs_b: np.ndarray, c_max: float,
    resamples: int = 2000, seed: int = 0,
) -> tuple[float, float, float, float, float, float]:  # fmt: skip
    """``(aiq_a, aiq_b, se, low, high, ahead)`` of ``a - b`` for two routers' ``(K, N)`` score and
    cost matrices over the same ``N`` prompts (``_matrices``): the AIQs on the prompts as given,
    then over ``resamples`` paired resamples the standard error and 2.5 / 97.5 percentiles of the
    difference and the share of resamples with ``a`` ahead."""
    point, draws = resampled_aiqs([(scores_a, costs_a), (scores_b, costs_b)], c_max, resamples, seed)
    return _summary(point[0], point[1], draws[:, 0] - draws[:, 1])


def gain_bootstrap(
    seen_a: tuple, full_a: tuple, seen_b: tuple, full_b: tuple, c_max: float, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float, float, float, float]:
    """Like ``paired_bootstrap`` for the unseen-model gain: ``(gain_a, gain_b, se, low, high,
    ahead)`` of ``gain_a - gain_b``, where a router's gain is its full-pool AIQ minus its
    seen-pool AIQ; each argument is a ``(scores, costs)`` pair over the same prompts."""
    point, draws = resampled_aiqs([seen_a, full_a, seen_b, full_b], c_max, resamples, seed)
    gains = draws[:, 1::2] - draws[:, 0::2]  # (resamples, 2): a, b
    return _summary(point[1] - point[0], point[3] - point[2], gains[:, 0] - gains[:, 1])


def _curves_of(rows: Sequence[dict], tables: dict, splits, names: Sequence[str]) -> dict:
    """``metrics.router_curves`` of ``rows``; a clear error when one of ``names`` has no decisions."""
    from routerl.eval.metrics import router_curves

    curves = router_curves(rows, tables, splits)
    present = {key[2] for key in curves}
    for name in names:
        if name not in present:
            held = f"of the routers asked for, they hold {', '.join(sorted(present))}" if present else "they hold none of the routers asked for"
            raise ValueError(f"no decisions of router {name!r} on {', '.join(sorted(tables)) or 'the loaded datasets'} in the "
                             f"decision files ({held} there; check the names and that --data are the run's tables)")
    return curves


def compare(
    rows: Sequence[dict], tables: dict, splits, router: str, baselines: Sequence[str], resamples: int = 2000, seed: int = 0
) -> list[PairedDifference]:
    """``PairedDifference`` of ``router`` against each of ``baselines`` wherever both have
    decisions (per dataset and pool; the same prompts and knobs are required)."""
    from routerl.eval.metrics import cost_range

    curves = _curves_of(rows, tables, splits, [router, *baselines])
    out = []
    for (dataset, pool, name), curve in sorted(curves.items()):
        if name != router:
            continue
        prompts = sorted(next(iter(curve.values())))
        _, c_max = cost_range(tables[dataset], splits, prompts)
        scores_a, costs_a = _matrices(curve, prompts)
        for baseline in baselines:
            other = curves.get((dataset, pool, baseline))
            if other is None:
                continue
            if sorted(other) != sorted(curve) or any(set(other[k]) != set(prompts) for k in other):
                raise ValueError(f"{baseline!r} and {router!r} were evaluated on different prompts or knobs ({dataset}/{pool})")
            scores_b, costs_b = _matrices(other, prompts)
            result = paired_bootstrap(scores_a, costs_a, scores_b, costs_b, c_max, resamples, seed)
            out.append(PairedDifference(dataset, pool, router, baseline, len(prompts), *result))
    return out


def compare_gain(
    rows: Sequence[dict], tables: dict, splits, router: str, baselines: Sequence[str], resamples: int = 2000, seed: int = 0
) -> list[PairedDifference]:
    """``PairedDifference`` of the unseen-model gain (full-pool minus seen-pool AIQ) of ``router``
    against each of ``baselines``, per dataset where all four curves exist, on the prompts every
    curve has (pool ``"full - seen"``; the AIQ columns hold the gains)."""
    from routerl.eval.metrics import cost_range

    curves = _curves_of(rows, tables, splits, [router, *baselines])
    out = []
    for dataset in sorted({key[0] for key in curves}):
        mine = [curves.get((dataset, pool, router)) for pool in ("seen", "full")]
        if None in mine:
            continue
        for baseline in baselines:
            theirs = [curves.get((dataset, pool, baseline)) for pool in ("seen", "full")]
            if None in theirs:
                continue
            four = [*mine, *theirs]
            if any(sorted(c) != sorted(four[0]) for c in four):
                raise ValueError(f"{baseline!r} and {router!r} were evaluated with different knobs ({dataset})")
            prompts = sorted(set.intersection(*(set(c[k]) for c in four for k in c)))
            if not prompts:
                continue
            _, c_max = cost_range(tables[dataset], splits, prompts)
            seen_a, full_a, seen_b, full_b = (_matrices(c, prompts) for c in four)
            result = gain_bootstrap(seen_a, full_a, seen_b, full_b, c_max, resamples, seed)
            out.append(PairedDifference(dataset, "full - seen", router, baseline, len(prompts), *result))
    return out


def read_runs(paths: Sequence[str | Path], routers: set[str], datasets: set[str]) -> list[dict]:
    """The decision rows of ``routers`` on ``datasets`` from several decision files; a router
    found in several files is read from the first that has it."""
    from routerl.eval.decisions import read_decisions

    rows: list[dict] = []
    taken: set[str] = set()
    for path in paths:
        these = [r for r in read_decisions(path) if r["dataset"] in datasets and r["router"] in routers - taken]
        rows.extend(these)
        taken |= {r["router"] for r in these}
    return rows


def markdown(results: Sequence[PairedDifference], resamples: int, measure: str = "AIQ") -> str:
    """A markdown table of ``results``; ``measure`` names what the two columns hold (AIQ or gain)."""
    lines = [
        f"| dataset | pool | prompts | {results[0].router if results else 'router'} {measure} | baseline | its {measure} | difference "
        f"| bootstrap s.e. | 95% interval ({resamples} resamples) | resamples ahead |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.dataset} | {r.pool} | {r.n_prompts} | {r.aiq_router:.4f} | {r.baseline} | {r.aiq_baseline:.4f} | {r.diff:+.4f} "
            f"| {r.se:.4f} | [{r.low:+.4f}, {r.high:+.4f}] | {r.ahead:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routerl.eval.paired", description=__doc__.split("\n\n")[0])
    parser.add_argument("decisions", nargs="+", help="routerl eval output directories or decisions.jsonl files")
    parser.add_argument("--data", action="append", required=True, help="outcome table (repeatable), as given to routerl eval")
    parser.add_argument("--splits", default=None, help="splits.json, as given to routerl eval")
    parser.add_argument("--router", required=True, help="the router to test (its name in the decision file)")
    parser.add_argument("--against", required=True, help="comma-separated baselines (names in the decision file)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unseen-gain", action="store_true",
                        help="compare the unseen-model gains (full-pool minus seen-pool AIQ) instead of AIQs")
    args = parser.parse_args(argv)
    from routerl.data import Splits, load_outcomes

    try:
        paths = [Path(p) / "decisions.jsonl" if Path(p).is_dir() else Path(p) for p in args.decisions]
        for path in paths:
            if not path.exists():
                raise ValueError(f"{path}: no such decision file")
        splits = Splits.load(args.splits) if args.splits else None
        tables = {}
        for data in args.data:
            table = load_outcomes(data)
            tables[table.name] = table
        baselines = [b.strip() for b in args.against.split(",") if b.strip()]
        if not baselines:
            raise ValueError("--against names no baseline")
        if args.router in baselines:
            raise ValueError(f"--against names --router {args.router!r} itself")
        if args.seed < 0 or args.resamples < 1:
            raise ValueError("--seed must be >= 0 and --resamples >= 1")
        rows = read_runs(paths, {args.router, *baselines}, set(tables))
        how = compare_gain if args.unseen_gain else compare
        results = how(rows, tables, splits, args.router, baselines, args.resamples, args.seed)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not results:
        print("error: no dataset and pool where both routers have decisions", file=sys.stderr)
        return 2
    print(markdown(results, args.resamples, "gain" if args.unseen_gain else "AIQ"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
