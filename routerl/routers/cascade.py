"""``cascade``: the ``learned`` router, then read each answer and accept it or call another model.

Round 1 is the ``learned`` router's choice: the best ``estimate - knob x estimated cost x 1000``.
After each answer, ``AnswerCheck`` (``routerl.routers.answer_check``) gives ``p``, the probability
that the answer is right, from its text, its estimate and its agreement with the answers before
it. The next candidate is the uncalled one with the best utility. It is called when

    estimate(next) - p  >  knob x estimated cost(next) x 1000 + margin

i.e. when the expected gain in score pays for the extra call at this knob. ``margin`` shifts how
readily it escalates. Otherwise, and after ``max_rounds`` calls, the last answer is accepted.

Fitting (``fit_cascade_router``) reads seen models' rows only:

1. the ``learned`` router, on train rows (``fit_learned_router``);
2. the answer check, on train prompts. Each (prompt, seen model) answer becomes rows with 0, 1 and
   2 random other seen models' answers as peers (seeded). The estimates there are cross-fitted:
   they come from a regressor fit without that prompt's fold (``folds``), as on a new query;
3. ``margin`` and ``max_rounds``, unless given: the pair in ``MARGINS`` x ``ROUNDS`` with the
   highest AIQ on the val prompts, seen pool, over the default knob sweep. The AIQ's cost range
   is the val cost of the seen pool's most expensive single model.

The eval's runner passes each answer's text as an ``Attempt``; a served request does the same
(``routerl complete`` and the ``Complete`` RPC, or ``routerl route --attempt MODEL=RESPONSE``). Costs in the rule are estimates from descriptors, never outcomes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from routerl.data.outcomes import OutcomeTable
from routerl.data.splits import Splits
from routerl.descriptors.model import ModelDescriptor
from routerl.routers.answer_check import Answer, AnswerCheck, check_features, fit_answer_check
from routerl.routers.base import USD_SCALE, Attempt, Decision, Query, Router, best_value, utility
from routerl.routers.learned import LEARNED_DEFAULTS, LearnedRouter, fit_learned_router, fit_regressor, seen_descriptors, seen_model_pairs
from routerl.routers.recorded import recorded_queries

log = logging.getLogger(__name__)

MARGINS = (-0.1, -0.05, 0.0, 0.05, 0.1)
ROUNDS = (2, 3)
CASCADE_DEFAULTS = {"folds": 2, "margin": None, "max_rounds": None}
JUDGE_FILE = "answer_judge.json"


def escalation(
    estimates: np.ndarray, costs: np.ndarray, knob: float, called: Sequence[int], p_last: float, margin: float
) -> tuple[int | None, float]:
    """The best uncalled candidate by utility and the net value of calling it after an answer
    judged right with probability ``p_last``: ``estimate - p_last - knob x cost x 1000 - margin``
    (``(None, nan)`` when every candidate was called). ``estimates``, ``costs``: ``(K,)``."""
    done = set(called)
    left = [k for k in range(len(estimates)) if k not in done]
    if not left:
        return None, float("nan")
    best = best_value(utility(estimates, costs, knob), costs, left)
    return best, float(estimates[best]) - p_last - knob * USD_SCALE * float(costs[best]) - margin


def worth_calling(k: int | None, value: float) -> int | None:
    """``k`` when calling it is worth its cost (``escalation``'s value above 0), else None."""
    return k if k is not None and value > 0 else None


def next_call(
    estimates: np.ndarray, costs: np.ndarray, knob: float, called: Sequence[int], p_last: float, margin: float
) -> int | None:
    """The candidate position to call next, or None to accept the last answer."""
    return worth_calling(*escalation(estimates, costs, knob, called, p_last, margin))


@dataclass(frozen=True)
class AnswerJudge:
    """The cascade's accept/escalate rule as a note the policy reads after each answer (training
    ``<info>`` blocks and served transcripts alike): ``check 0.31: call [2] (+0.12)`` = the answer
    is right with probability 0.31 and calling candidate 2 is worth +0.12 after its cost
    (``escalation``); ``check 0.93: keep (-0.20)`` when the best next call is not worth it. Saved
    as ``JUDGE_FILE`` beside the adapter."""

    check: AnswerCheck
    margin: float = 0.0

    def judge(self, estimates, costs, knob: float, called: Sequence[int | None], texts: Sequence[str]) -> tuple[float, int | None, float]:
        """``(p, next position or None, value)`` after the answers ``texts`` of ``called`` (same
        order; a None position, a model outside the candidates, counts with estimate 0.5)."""
        answers = [Answer(float(estimates[k]) if k is not None else 0.5, t) for k, t in zip(called, texts)]
        return self.decide(answers, estimates, costs, knob, [c for c in called if c is not None])

    def decide(self, answers: Sequence[Answer], estimates, costs, knob: float, called: Sequence[int]) -> tuple[float, int | None, float]:
        """``judge`` on ``Answer`` objects (the last one is judged, the others are its peers) and
        the candidate positions called so far."""
        p = self.check.prob(answers[-1], answers[:-1])
        k, value = escalation(np.asarray(estimates, float), np.asarray(costs, float), knob, called, p, self.margin)
        return p, k, value

    def note(self, estimates, costs, knob: float, called: Sequence[int], texts: Sequence[str]) -> str:
        return self.format(*self.judge(estimates, costs, knob, called, texts))

    @staticmethod
    def format(p: float, k: int | None, value: float) -> str:
        if k is None:
            return f"check {p:.2f}: keep (nobody left)"
        return f"check {p:.2f}: " + (f"call [{k + 1}] ({value:+.2f})" if worth_calling(k, value) is not None else f"keep ({value:+.2f})")

    def to_dict(self) -> dict:
        return {**self.check.to_dict(), "margin": self.margin}

    @classmethod
    def from_dict(cls, data: dict) -> "AnswerJudge":
        return cls(AnswerCheck.from_dict(data), float(data.get("margin", 0.0)))

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path) -> "AnswerJudge":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not an answer-judge file ({exc})") from None


class CascadeRouter(Router):
    """Multi-round: ``first`` routes round 1; ``judge`` (its answer check and margin) decides
    after each answer (module docstring)."""

    name = "cascade"

    def __init__(self, first: LearnedRouter, judge: AnswerJudge, max_rounds: int = 3, info: dict | None = None):
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be at least 1, got {max_rounds}")
        self.first = first
        self.judge = judge
        self.max_rounds = int(max_rounds)
        self.info = dict(info or {})
        self._memo: tuple | None = None

    @property
    def check(self) -> AnswerCheck:
        return self.judge.check

    @property
    def margin(self) -> float:
        return self.judge.margin

    def prepare(self, queries) -> None:
        prepare = getattr(self.first, "prepare", None)
        if callable(prepare):
            prepare(queries)

    def _estimates(self, query: Query, candidates: Sequence[ModelDescriptor]) -> tuple[np.ndarray, np.ndarray]:
        key = (query, tuple(c.id for c in candidates))
        memo = self._memo  # one query's estimates, for its later rounds (read once: thread-safe)
        if memo is None or memo[0] != key:
            memo = (key, self.first.predict(query, candidates), self.first.costs(query, candidates))
            self._memo = memo
        return memo[1], memo[2]

    def decide(self, query, candidates, knob, attempts: Sequence[Attempt] = ()) -> Decision:
        if not candidates:
            raise ValueError("no candidates to route to")
        estimates, costs = self._estimates(query, candidates)
        if not attempts:
            return self._route(candidates, estimates, costs, knob)
        k, value, think = self._judged(query, candidates, estimates, costs, knob, attempts)
        if len(attempts) < self.max_rounds:
            k = worth_calling(k, value)
            if k is not None:
                return Decision("route", candidates[k].id, [(candidates[k].id, 1.0)], think, float(costs[k]), self.name)
        return Decision("accept", attempts[-1].model_id, [], think, 0.0, self.name)

    def _judged(self, query, candidates, estimates, costs, knob, attempts: Sequence[Attempt]) -> tuple[int | None, float, str]:
        """After the answers ``attempts``: the best next call, its net value (``escalation``) and
        the think text (the judge's probability that the last answer is right)."""
        position = {c.id: k for k, c in enumerate(candidates)}
        p, k, value = self.judge.judge(estimates, costs, knob, [position.get(a.model_id) for a in attempts], [a.response for a in attempts])
        return k, value, f"check {p:.2f}"

    def _route(self, candidates, estimates, costs, knob) -> Decision:
        decision = self.first._decision(candidates, estimates, costs, knob, ())
        decision.router = self.name
        return decision

    def decide_many(self, query, candidates, knobs, attempts=()):
        if attempts:
            return [self.decide(query, candidates, k, attempts) for k in knobs]
        if not candidates:
            raise ValueError("no candidates to route to")
        estimates, costs = self._estimates(query, candidates)
        return [self._route(candidates, estimates, costs, k) for k in knobs]


def _fold(prompt_id: str, folds: int) -> int:
    return int(hashlib.sha256(prompt_id.encode()).hexdigest()[:8], 16) % folds


def cross_fit_estimates(table, splits, first: LearnedRouter, embedder, folds: int, seed: int = 0):
    """Out-of-fold estimates on seen models' train rows: ``(estimates, scores, prompts, models)``,
    each ``(n,)``; a row's estimate comes from a regressor fit without its prompt's fold."""
    descriptors = seen_descriptors(table, splits)
    x, y, prompts, models = seen_model_pairs(table, splits, "train", descriptors, first.features, embedder, with_prompts=True, with_models=True)
    fold = np.array([_fold(table.prompt_ids[p], folds) for p in prompts])
    estimates = np.empty(len(y))
    iterations = int(first.info.get("iterations", LEARNED_DEFAULTS["max_iter"]))
    for f in range(folds):
        test = fold == f
        if not test.any():
            continue
        if test.all():
            raise ValueError(f"{table.name}: every train prompt fell in one fold; use more train prompts or fewer folds")
        model, _ = fit_regressor(x[~test], y[~test], x[:0], y[:0], max_iter=iterations, seed=seed)
        estimates[test] = np.clip(model.predict(x[test]), 0.0, 1.0)
    return estimates, y, prompts, models


def answer_check_rows(table: OutcomeTable, estimates, scores, prompts, models, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``check_features`` rows and labels (score >= 0.5): each answer alone, and with 1 and 2
    random other answers to the same prompt as peers."""
    rng = np.random.default_rng(seed)
    by_prompt: dict[int, list[int]] = {}
    for n, p in enumerate(prompts):
        by_prompt.setdefault(int(p), []).append(n)
    xs, labels = [], []
    for p, rows in by_prompt.items():
        answers = {n: Answer(float(estimates[n]), table.response(p, int(models[n])) or "") for n in rows}
        for n in rows:
            others = [m for m in rows if m != n]
            for size in (0, 1, 2):
                if size > len(others):
                    break
                peers = [answers[m] for m in rng.choice(others, size, replace=False)] if size else []
                xs.append(check_features(answers[n], peers))
                labels.append(scores[n] >= 0.5)
    return np.array(xs), np.array(labels)


def choose_margin(
    router: CascadeRouter, table: OutcomeTable, splits, descriptors: dict[str, ModelDescriptor],
    margins: Sequence[float] = MARGINS, rounds_grid: Sequence[int] = ROUNDS,
) -> tuple[float, int, dict]:
    """The (margin, max_rounds) of ``margins`` x ``rounds_grid`` with the best val AIQ, seen pool
    (ties: fewer rounds, then the margin nearest 0)."""
    results = val_aiq_grid(router, table, splits, descriptors, margins, rounds_grid)
    if not results:
        return margins[len(margins) // 2], max(rounds_grid), {}
    (margin, rounds), best = max(results.items(), key=lambda kv: (kv[1], -kv[0][1], -abs(kv[0][0])))
    return margin, rounds, {"val_aiq": round(best, 4), "val_grid": {f"{m:+g}/{r}": round(v, 4) for (m, r), v in results.items()}}


def val_aiq_grid(
    router: CascadeRouter, table: OutcomeTable, splits, descriptors: dict[str, ModelDescriptor],
    margins: Sequence[float], rounds_grid: Sequence[int],
) -> dict[tuple[float, int], float]:
    """``{(margin, max_rounds): AIQ}`` of ``router``'s rule on the val prompts (seen pool, the
    default knob sweep, recorded answers; empty without val prompts)."""
    from routerl.eval.frontier import aiq
    from routerl.eval.runner import DEFAULT_KNOBS

    prompts = table.prompts_in("val")
    if prompts.size == 0:
        return {}
    seen = table.seen_mask(splits) & table.priced
    queries = recorded_queries(table, prompts)
    router.prepare(queries)
    cases = []
    for p, query in zip(prompts, queries):
        js = np.flatnonzero(table.available[p] & seen)
        if js.size == 0:
            continue
        candidates = [descriptors[table.models[j]] for j in js]
        estimates, costs = router._estimates(query, candidates)
        answers = [Answer(float(estimates[k]), table.response(p, int(j)) or "") for k, j in enumerate(js)]
        cases.append((js, estimates, costs, answers, table.score[p, js], table.cost[p, js]))
    singles = [j for j in np.flatnonzero(seen) if table.available[prompts, j].mean() >= 0.95]
    c_max = max(float(np.nanmean(table.cost[prompts, j])) for j in singles) * USD_SCALE if singles else None
    results = {}
    for rounds in rounds_grid:
        for margin in margins:
            judge = AnswerJudge(router.check, float(margin))
            points = [_simulate(cases, judge, k, rounds) for k in DEFAULT_KNOBS]
            cost, acc = zip(*points)
            results[(float(margin), int(rounds))] = aiq(cost, acc, c_max or max(cost))
    return results


def _simulate(cases, judge: AnswerJudge, knob: float, rounds: int) -> tuple[float, float]:
    """Mean (USD per 1k queries, score) of the cascade over recorded ``cases`` at ``knob``."""
    total_cost = total_score = 0.0
    for js, estimates, costs, answers, scores, true_costs in cases:
        called = [best_value(utility(estimates, costs, knob), costs, range(len(js)))]
        while len(called) < rounds:
            k = worth_calling(*judge.decide([answers[c] for c in called], estimates, costs, knob, called)[1:])
            if k is None:
                break
            called.append(k)
        total_score += float(scores[called[-1]])
        total_cost += float(np.sum(true_costs[called]))
    n = max(len(cases), 1)
    return total_cost / n * USD_SCALE, total_score / n


def fit_cascade_router(
    table: OutcomeTable,
    splits: Splits | None,
    embedder,
    *,
    folds: int = 2,
    margin: float | None = None,
    max_rounds: int | None = None,
    seed: int = 0,
    **learned_options,
) -> CascadeRouter:
    """Fit the round-1 router, the answer check and (unless given) margin and rounds."""
    if table is None:
        raise ValueError("the cascade router needs an outcome table to fit on")
    if table.responses is None:
        raise ValueError(f"{table.name}: the cascade router reads answers; the table has no responses file")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    first = fit_learned_router(table, splits, embedder, seed=seed, **learned_options)
    estimates, scores, prompts, models = cross_fit_estimates(table, splits, first, embedder, folds, seed)
    x, correct = answer_check_rows(table, estimates, scores, prompts, models, seed)
    check = fit_answer_check(x, correct)
    info = {"check_rows": int(len(correct)), "check": check.to_dict()}
    router = CascadeRouter(first, AnswerJudge(check, margin or 0.0), max_rounds or max(ROUNDS), info)
    if margin is None or max_rounds is None:
        margins = MARGINS if margin is None else (float(margin),)
        rounds_grid = ROUNDS if max_rounds is None else (int(max_rounds),)
        chosen, router.max_rounds, grid = choose_margin(router, table, splits, seen_descriptors(table, splits), margins, rounds_grid)
        router.judge = AnswerJudge(check, chosen)
        info.update(grid)
    info.update(margin=router.margin, max_rounds=router.max_rounds)
    router.info = info
    log.info("cascade router on %s: margin %+g, max_rounds %d, %s", table.name, router.margin, router.max_rounds,
             {k: v for k, v in info.items() if k not in ("check", "val_grid")})
    return router


def fit_pooled_judge(sources, evidence, max_rounds: int, seed: int = 0, margins: Sequence[float] = MARGINS) -> tuple[AnswerJudge, dict]:
    """The policy's answer judge over several tables: the answer check fit on every table's
    seen-model train answers, with the estimates the training episodes show (``evidence``: a
    ``CrossFitLearnedRouter``; a train prompt's estimate comes from its fold's regressor), and
    the margin of ``margins`` with the best mean val AIQ over the tables at ``max_rounds``.
    ``sources``: ``[(table, splits)]``. Returns the judge and ``info`` (rows, val grid)."""
    xs, labels = [], []
    for table, splits in sources:
        if table.responses is None:
            raise ValueError(f"{table.name}: the answer judge reads answers; the table has no responses file")
        x, y, prompts, models = seen_model_pairs(
            table, splits, "train", seen_descriptors(table, splits), evidence.features, evidence.embedder, with_prompts=True, with_models=True
        )
        estimates = evidence.predict_rows(x, [table.prompt_ids[p] for p in prompts])
        rx, ry = answer_check_rows(table, estimates, y, prompts, models, seed)
        xs.append(rx)
        labels.append(ry)
    check = fit_answer_check(np.concatenate(xs), np.concatenate(labels))
    serving = evidence.serving()
    grids = [
        val_aiq_grid(CascadeRouter(serving, AnswerJudge(check), max_rounds), table, splits, seen_descriptors(table, splits), margins, (max_rounds,))
        for table, splits in sources
    ]
    grids = [g for g in grids if g]
    mean = {m: float(np.mean([g[(float(m), int(max_rounds))] for g in grids])) for m in margins} if grids else {}
    margin = max(mean, key=lambda m: (mean[m], -abs(m))) if mean else 0.0
    info = {"check_rows": int(sum(len(l) for l in labels)), "margin": margin, "val_aiq_by_margin": {f"{m:+g}": round(v, 4) for m, v in mean.items()}}
    log.info("answer judge: %s", info)
    return AnswerJudge(check, float(margin)), info
