"""``DecisionRecorder``: run a router through ``routerl.eval.runner`` and look at each decision.

The evaluation's diagnostics (``note_agreement``, ``accept_threshold``) wrap a policy router in a
subclass: the runner sees the wrapped router's name, round limit, ``prepare`` and ``decide_many``
(first calls), and every ``decide`` (the later rounds) is passed to ``record`` with its decision.
"""

from __future__ import annotations

from typing import Sequence


class DecisionRecorder:
    """Wraps ``router``; subclasses implement ``record``."""

    def __init__(self, router):
        self.router = router
        self.name = router.name
        self.max_rounds = router.max_rounds

    def prepare(self, queries) -> None:
        prepare = getattr(self.router, "prepare", None)
        if callable(prepare):
            prepare(queries)

    def decide_many(self, query, candidates, knobs):
        return self.router.decide_many(query, candidates, knobs)

    def decide(self, query, candidates, knob: float, attempts: Sequence = ()):
        decision = self.router.decide(query, candidates, knob, attempts)
        self.record(query, candidates, knob, attempts, decision)
        return decision

    def record(self, query, candidates, knob: float, attempts: Sequence, decision) -> None:
        raise NotImplementedError
