"""Teacher routers whose decisions the supervised warm start imitates, with short rationales.

* ``descriptor``: what the policy itself can read. Turn 1 routes to the best expected utility
  ``score - knob * 1000 * est_cost`` (score = the descriptor's sample score on the query's domain,
  else its overall score). After an answer, it accepts a correct answer and escalates from a wrong
  one to the best remaining candidate when that still has positive utility (correctness comes
  from the train prompt's recorded score: a supervised label, as a verifier would learn).
  With ``escalation="gain"`` it escalates only when that pays on the recorded outcomes: the next
  candidate's true score minus the last one's exceeds ``knob * 1000 * cost`` of the extra call (a
  wrong answer that the next model would get wrong too, or whose fix costs more than the knob
  allows, is accepted): the label a policy should learn when escalations must pay for themselves.
  With ``escalation="check"`` it follows the env's answer judge (``routerl.routers.cascade``):
  it escalates to the candidate the note names when the note's value is positive, else accepts.
  It reads no outcome, only what the policy reads in the ``<info>`` note, so the policy can learn
  the same decision.
* ``oracle``: the cost-aware oracle on true scores and costs (train prompts only): routes to
  ``argmax score - knob * 1000 * cost`` (ties: cheaper) and accepts its answer.

``trajectory`` plays the teacher through an episode and returns the turn texts and the ``<info>``
texts between them: ``[turn_1, info_1, turn_2, ...]``.
"""

from __future__ import annotations

import numpy as np

from routerl.descriptors.render import format_usd_per_1k
from routerl.env import Episode
from routerl.env.actions import format_accept, format_route
from routerl.routers.base import USD_SCALE, best_value
from routerl.routers.cascade import worth_calling

TEACHERS = ("descriptor", "oracle")
ESCALATIONS = ("wrong", "gain", "check")  # descriptor teacher: after any wrong answer | only when it pays | as the answer judge says


def expected_scores(episode: Episode) -> np.ndarray:
    """Per candidate: the shortlist's per-query estimate when the episode has one, else the
    descriptor's domain sample score, else overall score, else 0.5. ``(K,)``."""
    spec = episode.spec
    if spec.evidence is not None:
        return np.asarray(spec.evidence, dtype=float)
    out = []
    for d in spec.descriptors:
        s = d.sample_scores.get(spec.query.domain) if spec.query.domain else None
        if s is None:
            s = d.overall_score()
        out.append(0.5 if s is None else s)
    return np.asarray(out, dtype=float)


def estimated_costs(episode: Episode) -> np.ndarray:
    """Per candidate: the descriptor's estimated USD cost of this query. ``(K,)``."""
    return np.asarray(episode.estimated_costs())


def _rationale(episode: Episode, k: int, score: float, cost: float) -> str:
    domain = episode.spec.query.domain or "query"
    return f"{domain}, knob {episode.spec.knob:g}: [{k + 1}] {score:.2f} at {format_usd_per_1k(cost)}/1k q"


def first_choice(episode: Episode, teacher: str) -> tuple[int, str]:
    """``(candidate position, rationale)`` of the teacher's first call."""
    knob = episode.spec.knob
    exp, est = expected_scores(episode), estimated_costs(episode)
    K = len(episode.spec.pool)
    if teacher == "oracle":
        true_u = np.asarray(episode.scores) - knob * USD_SCALE * np.asarray(episode.costs)
        k = best_value(true_u, np.asarray(episode.costs), list(range(K)))
    elif teacher == "descriptor":
        k = best_value(exp - knob * USD_SCALE * est, est, list(range(K)))
    else:
        raise ValueError(f"unknown teacher {teacher!r}; expected one of {', '.join(TEACHERS)}")
    return k, _rationale(episode, k, exp[k], est[k])


def next_choice(episode: Episode, teacher: str, escalation: str = "wrong") -> tuple[int | None, str]:
    """After a call: ``(position, rationale)`` to escalate, or ``(None, rationale)`` to accept
    (``escalation``: ``ESCALATIONS``, see the module docstring)."""
    if escalation not in ESCALATIONS:
        raise ValueError(f"unknown escalation {escalation!r}; expected one of {', '.join(ESCALATIONS)}")
    last = episode.calls[-1]
    if escalation == "check" and teacher == "descriptor":
        if episode.judge is None or episode.spec.evidence is None:
            raise ValueError("escalation 'check' needs an answer judge on the env (env.answer_judge: true, shortlist mode)")
        p, k, value = episode.judge_now()
        if worth_calling(k, value) is not None:
            return k, f"check {p:.2f}: call [{k + 1}]"
        return None, f"check {p:.2f}: keep [{last + 1}]"
    if teacher == "oracle" or episode.scores[last] >= 0.5:
        return None, f"[{last + 1}] answered; keep it"
    knob = episode.spec.knob
    exp, est = expected_scores(episode), estimated_costs(episode)
    left = [k for k in range(len(episode.spec.pool)) if k not in episode.calls]
    if not left:
        return None, f"[{last + 1}] answered; nobody left"
    u = exp - knob * USD_SCALE * est
    k = best_value(u, est, left)
    if u[k] <= 0:
        return None, f"[{last + 1}] may be wrong; no better value left"
    if escalation == "gain" and episode.scores[k] - episode.scores[last] <= knob * USD_SCALE * episode.costs[k]:
        return None, f"[{last + 1}] may be wrong; another call would not pay"
    return k, f"[{last + 1}] may be wrong; " + _rationale(episode, k, exp[k], est[k]).split(": ", 1)[1]


def trajectory(episode: Episode, teacher: str, think: bool, escalation: str = "wrong") -> list[str]:
    """Play the teacher through ``episode`` (which it mutates); ``[turn, info, turn, ...]``."""
    texts: list[str] = []
    k, why = first_choice(episode, teacher)
    while True:
        turn = format_route(k, why if think else "") if k is not None else format_accept(why if think else "")
        texts.append(turn)
        result = episode.step(turn)
        if result.done:
            return texts
        texts.append(result.info or "")
        k, why = next_choice(episode, teacher, escalation)
