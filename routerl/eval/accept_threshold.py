"""Choose the policy's ``escalate_below`` on val prompts: how readily it routes again after an answer.

    python -m routerl.eval.accept_threshold \\
        --data ../shared/data/zeroeval.jsonl.gz --data ../shared/data/mmlupro.jsonl.gz \\
        --splits ../shared/data/splits.json --sample 400 --knobs 0,0.1,1

A fast-mode policy with two calls decides after its first answer between accepting it and routing
to another shortlisted model. Trained by imitation, it takes the most probable action, and it
accepts most answers. ``PolicyConfig.escalate_below`` replaces that rule by a threshold: accept when
the policy's accept probability is at least the threshold, otherwise route to its most probable
other candidate. This runs the policy once (as ``routerl eval`` does: the full pool of a seeded
sample of ``--split`` prompts, each knob; first call, then the decision after the recorded answer),
records each accept probability and the policy's best other candidate, and replays every
threshold of ``--thresholds`` on the recorded outcomes: the AIQ (cost range: the split sample's
most expensive single model), accuracy, cost and calls per query at each, and the mean AIQ over
the datasets. The threshold with the best mean AIQ is printed last; ``argmax`` is the trained rule.
Choose on val, then evaluate on test with ``routerl eval --router policy:escalate_below=T`` (or ship
it: ``python -m routerl.train.ship CHECKPOINT --policy escalate_below=T``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from routerl.eval.recording import DecisionRecorder

DEFAULT_THRESHOLDS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


@dataclass(frozen=True)
class AfterAnswer:
    """One (prompt, knob): the first model, the policy's accept probability after its answer, the
    most probable other candidate (None: nobody left) and what the trained rule did."""

    prompt_id: str
    knob: float
    first: str
    p_accept: float
    other: str | None
    routed: bool


class AcceptRecorder(DecisionRecorder):
    """Wraps a fast-mode ``PolicyRouter``: records every decision after a first answer (``AfterAnswer``)."""

    def __init__(self, router):
        super().__init__(router)
        self.records: list[AfterAnswer] = []

    def record(self, query, candidates, knob: float, attempts: Sequence, decision) -> None:
        if len(attempts) != 1:
            return
        first = attempts[0].model_id
        probs = dict(decision.ranking)
        others = [(p, m) for m, p in decision.ranking if m != first and p > 0]
        other = max(others)[1] if others else None
        self.records.append(AfterAnswer(query.prompt_id, float(knob), first, float(probs.get(first, 1.0)), other, decision.action == "route"))


def replay(records: Sequence[AfterAnswer], table, prompt_ids: Sequence[str], knobs: Sequence[float], threshold: float | None) -> list[tuple[float, float, float]]:
    """``[(accuracy, USD per 1k, calls)]`` per knob when every recorded decision follows
    ``threshold`` (None: what the policy did). A (prompt, knob) without a record kept its first
    answer (the runner asked nothing: one candidate, or one call allowed)."""
    from routerl.routers.base import USD_SCALE

    by_key = {(r.prompt_id, r.knob): r for r in records}
    points = []
    for knob in knobs:
        score = cost = calls = 0.0
        for pid in prompt_ids:
            r = by_key.get((pid, float(knob)))
            if r is None:
                raise ValueError(f"no recorded decision for {pid!r} at knob {knob}")
            i = table.prompt_index(pid)
            route = r.routed if threshold is None else (r.other is not None and r.p_accept < threshold)
            models = [r.first, r.other] if route else [r.first]
            js = [table.model_index(m) for m in models]
            score += float(table.score[i, js[-1]])
            cost += float(sum(table.cost[i, j] for j in js))
            calls += len(js)
        n = len(prompt_ids)
        points.append((score / n, cost / n * USD_SCALE, calls / n))
    return points


def main(argv: Sequence[str] | None = None) -> int:
    from routerl.cli import CliError
    from routerl.cli.cmd_eval import parse_knobs
    from routerl.data import Splits, load_outcomes
    from routerl.descriptors import build_descriptors
    from routerl.eval.frontier import aiq
    from routerl.eval.metrics import cost_range
    from routerl.eval.runner import evaluation_prompts, run_router
    from routerl.policy.router import load_policy_router

    ap = argparse.ArgumentParser(prog="python -m routerl.eval.accept_threshold", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--checkpoint", default=None, help="a policy checkpoint (default: the shipped policy)")
    ap.add_argument("--data", action="append", required=True, metavar="TABLE", help="an outcome table (repeatable)")
    ap.add_argument("--splits", required=True, help="splits.json")
    ap.add_argument("--split", default="val", choices=("val", "train"), help="prompts to replay on (default val; never choose on test)")
    ap.add_argument("--sample", type=int, default=None, help="prompts per dataset (seeded sample; default all)")
    ap.add_argument("--knobs", default="0,0.1,1", help="comma-separated knobs (default 0,0.1,1)")
    ap.add_argument("--thresholds", default=",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS), help="comma-separated thresholds in [0, 1]")
    ap.add_argument("--seed", type=int, default=0, help="sample seed (default 0, as routerl eval)")
    args = ap.parse_args(argv)
    try:
        try:
            thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
        except ValueError:
            thresholds = []
        if not thresholds or any(not 0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f"--thresholds must be numbers in [0, 1], got {args.thresholds!r}")
        if args.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {args.seed}")
        knobs = parse_knobs(args.knobs)  # the flags and the splits before the model loads
        splits = Splits.load(args.splits)
        router = load_policy_router(args.checkpoint, escalate_below=0.0)
        if router.config.mode != "fast" or router.max_rounds < 2:
            raise ValueError("the policy must run in fast mode with at least 2 calls (max_rounds >= 2)")
        recorder = AcceptRecorder(router)
        results: dict[str, dict] = {}
        for path in args.data:
            table = load_outcomes(path)
            prompts = evaluation_prompts(table, args.split, sample=args.sample, seed=args.seed)
            recorder.records = []
            rows = list(run_router(recorder, recorder.name, table, splits, prompts, build_descriptors(table), ["full"], knobs))
            ids = sorted({r["prompt_id"] for r in rows}, key=table.prompt_index)
            _, c_max = cost_range(table, splits, ids)
            lines = [f"\n{table.name}: {len(ids)} {args.split} prompts x {len(knobs)} knobs, full pool", "",
                     "| rule | AIQ | accuracy (mean over knobs) | USD per 1k (mean) | calls per query |", "|---|---|---|---|---|"]  # fmt: skip
            results[table.name] = {}
            for t in [None, *thresholds]:
                pts = replay(recorder.records, table, ids, knobs, t)
                value = aiq([p[1] for p in pts], [p[0] for p in pts], c_max)
                results[table.name][t] = value
                name = "argmax (trained)" if t is None else f"escalate_below={t:g}"
                lines.append(f"| {name} | {value:.4f} | {np.mean([p[0] for p in pts]):.4f} | {np.mean([p[1] for p in pts]):.3f} | {np.mean([p[2] for p in pts]):.3f} |")
            print("\n".join(lines))
        mean = {t: float(np.mean([r[t] for r in results.values()])) for t in [None, *thresholds]}
        print("\n| rule | mean AIQ over the datasets |\n|---|---|")
        for t, v in mean.items():
            print(f"| {'argmax (trained)' if t is None else f'escalate_below={t:g}'} | {v:.4f} |")
        best = max(thresholds, key=lambda t: (mean[t], -t))
        print(f"\nbest threshold on {args.split}: escalate_below={best:g} (mean AIQ {mean[best]:.4f}; the trained rule: {mean[None]:.4f})")
    except (OSError, ValueError, CliError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
