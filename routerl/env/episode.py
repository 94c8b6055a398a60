"""One routing episode over recorded outcomes.

An episode is (query, candidate pool, cost knob, round limit). The policy acts with the grammar of
``routerl.env.actions``; each ``<route>k</route>`` "calls" candidate k: the recorded response is
returned inside ``<info>...</info>`` and its recorded cost is paid. ``<accept/>`` stops and accepts
the last answer. After ``max_rounds`` calls the last routed answer is final. An invalid turn ends
the episode (the last routed answer, if any, stays final) and is charged by the format term.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from routerl.descriptors.model import ModelDescriptor
from routerl.env.actions import Action, info_block, parse_action
from routerl.routers.base import Query


@dataclass(frozen=True)
class EpisodeSpec:
    """What the policy is given. ``pool`` holds table model indices in candidate order;
    ``descriptors[k]`` describes ``pool[k]`` (possibly perturbed in training)."""

    prompt: int
    query: Query
    pool: tuple[int, ...]
    descriptors: tuple[ModelDescriptor, ...]
    knob: float
    max_rounds: int
    evidence: tuple[float, ...] | None = None  # per-candidate score estimates for this query (shortlist mode)


@dataclass
class StepResult:
    action: Action
    info: str | None  # the <info> text returned for a route, else None
    done: bool


@dataclass
class Episode:
    """Mutable state of one episode; ``step`` consumes one policy turn."""

    spec: EpisodeSpec
    scores: tuple[float, ...]  # true score of each pool member on this prompt
    costs: tuple[float, ...]  # true USD cost of each pool member on this prompt
    responses: tuple[str, ...]  # recorded response text of each pool member ("" if none)
    max_info_chars: int = 600
    judge: object | None = None  # an AnswerJudge (shortlist mode): its note ends each <info> block
    calls: list[int] = field(default_factory=list)  # candidate positions called, in order
    actions: list[Action] = field(default_factory=list)
    done: bool = False

    # -- acting ------------------------------------------------------------------------------
    def step(self, text: str) -> StepResult:
        if self.done:
            raise RuntimeError("episode is over")
        action = parse_action(text, len(self.spec.pool))
        if action.kind == "route" and action.index in self.calls:
            action = Action("invalid", None, action.think, False, f"candidate {action.index + 1} was already called")
        if action.kind == "accept" and not self.calls:
            action = Action("invalid", None, action.think, False, "<accept/> before any <route>")
        self.actions.append(action)
        if action.kind == "invalid" or action.kind == "accept":
            self.done = True
            return StepResult(action, None, True)
        self.calls.append(action.index)
        self.done = len(self.calls) >= self.spec.max_rounds
        return StepResult(action, self.info_text(action.index), self.done)

    def info_text(self, k: int) -> str:
        """``<info>`` block for candidate position ``k``, the last one called: its answer (head and
        tail kept when long), its cost per 1k queries and, with a ``judge``, its note on the calls
        so far (``judge_now``)."""
        note = ""
        if self.judge is not None and self.spec.evidence is not None:
            p, nxt, value = self.judge_now()
            note = self.judge.format(p, nxt, value)
        return info_block(k, self.responses[k], self.costs[k], self.max_info_chars, note)

    def estimated_costs(self) -> list[float]:
        """Per candidate: the descriptor's estimated USD cost of this query (what the policy reads)."""
        return [d.estimate_cost_usd(self.spec.query.tokens) for d in self.spec.descriptors]

    def judge_now(self) -> tuple[float, int | None, float]:
        """The judge's ``(p, next position or None, value)`` after the calls so far (shortlist
        mode with a judge only)."""
        if self.judge is None or self.spec.evidence is None or not self.calls:
            raise ValueError("judging needs a judge, shortlist estimates and at least one call")
        texts = [self.responses[c] for c in self.calls]
        return self.judge.judge(self.spec.evidence, self.estimated_costs(), self.spec.knob, self.calls, texts)

    # -- results -----------------------------------------------------------------------------
    @property
    def final(self) -> int | None:
        """Candidate position whose answer is final (the last one called), or None."""
        return self.calls[-1] if self.calls else None

    @property
    def final_model(self) -> int | None:
        return self.spec.pool[self.final] if self.final is not None else None

    @property
    def outcome(self) -> float:
        return self.scores[self.final] if self.final is not None else 0.0

    @property
    def cost_usd(self) -> float:
        return float(sum(self.costs[k] for k in self.calls))

    @property
    def well_formed(self) -> bool:
        """Every turn followed the grammar and at least one candidate was called."""
        return bool(self.calls) and all(a.well_formed for a in self.actions)
