"""``cascade-oracle``: the ``cascade`` with a perfect accept/escalate decision, the upper bound of
reading answers (as ``oracle`` is of routing; like it, it reads test outcomes).

Round 1 is the ``learned`` router's choice, as in ``cascade``. After each answer it knows whether
the answer is right: ``p`` = the recorded score of (prompt, answering model), 0 or 1, where
``cascade`` has its answer check's probability. The rest is ``cascade``'s rule with margin 0: a
right answer is accepted (no candidate's estimate exceeds 1); after a wrong one the best uncalled
candidate by utility is called when ``estimate(next) - p > knob x estimated cost x 1000``, up to
``max_rounds`` calls. Which model comes next stays the learned estimate; only the judging is
perfect. Comparing ``cascade`` with ``cascade-oracle`` measures how much of what reading answers
could add a router's judging gets, as ``OracleGapClosed`` does for routing.

``error`` (default 0) makes the judge imperfect in a controlled way: each verdict is flipped with
that probability (right read as wrong and wrong as right alike), fixed per (prompt, model, seed),
so that a sweep over ``error`` shows how good a judge must be for answer reading to pay.

    routerl eval --data ../shared/data/mmlupro.jsonl.gz --splits ../shared/data/splits.json \\
        --router cascade-oracle,cascade-oracle:max_rounds=3,cascade-oracle:error=0.1,cascade,learned \\
        --pools full --out runs/judging
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from routerl.data.outcomes import OutcomeTable
from routerl.routers.base import Attempt
from routerl.routers.cascade import CascadeRouter, escalation
from routerl.routers.learned import LearnedRouter

DEFAULT_ROUNDS = 2


class PerfectJudgeCascade(CascadeRouter):
    """``CascadeRouter`` whose judge is the recorded outcome (module docstring). ``judge`` is
    None: no answer check is fit or read."""

    name = "cascade-oracle"

    def __init__(
        self, first: LearnedRouter, table: OutcomeTable, max_rounds: int = DEFAULT_ROUNDS,
        error: float = 0.0, seed: int = 0, info: dict | None = None,
    ):
        if table is None:
            raise ValueError("cascade-oracle needs an outcome table (it reads true outcomes)")
        if not 0.0 <= error <= 1.0:
            raise ValueError(f"cascade-oracle: error must be in [0, 1], got {error}")
        super().__init__(first, None, max_rounds, info)  # type: ignore[arg-type]
        self.table = table
        self.error = float(error)
        self.seed = int(seed)

    @property
    def check(self):
        raise AttributeError("cascade-oracle has no answer check: its verdicts are recorded scores (verdict())")

    @property
    def margin(self) -> float:
        return 0.0

    def truth(self, prompt_id: str | None, model_id: str) -> float:
        """The recorded score of ``model_id``'s answer to ``prompt_id``."""
        if prompt_id is None:
            raise ValueError("cascade-oracle can only judge recorded prompts (the query has no prompt_id)")
        i, j = self.table.prompt_index(prompt_id), self.table.model_index(model_id)
        if not np.isfinite(self.table.score[i, j]):
            raise ValueError(f"cascade-oracle: no recorded outcome of {model_id!r} on prompt {prompt_id!r}")
        return float(self.table.score[i, j])

    def verdict(self, prompt_id: str | None, model_id: str) -> float:
        """``truth``, flipped (``1 - truth``) with probability ``error``, fixed per (prompt, model, seed)."""
        p = self.truth(prompt_id, model_id)
        if self.error > 0.0:
            digest = hashlib.sha256(f"{self.seed}|{prompt_id}|{model_id}".encode()).digest()
            if int.from_bytes(digest[:8], "big") / 2.0**64 < self.error:
                return 1.0 - p
        return p

    def _judged(self, query, candidates, estimates, costs, knob, attempts: Sequence[Attempt]) -> tuple[int | None, float, str]:
        p = self.verdict(query.prompt_id, attempts[-1].model_id)
        position = {c.id: k for k, c in enumerate(candidates)}
        called = [position[a.model_id] for a in attempts if a.model_id in position]
        return (*escalation(estimates, costs, knob, called, p, 0.0), f"score {p:g}")
