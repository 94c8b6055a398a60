"""``best-single``: always the same model, the pool's best by train-split accuracy.

The ranking key of a candidate is ``(is single model, accuracy)``:

* accuracy = its mean score on the table's *train* prompts when it is a seen model in the table;
  otherwise (an unseen model, whose non-probe rows no router may read, or a model registered at
  run time) its descriptor's overall probe score (0 without evidence);
* a "single model" has a priced row on at least 95% of the table's prompts (the protocol's
  definition; models registered at run time are not single models).

The top-ranked candidate present in the pool answers: when the best single model has no row for
a prompt, the next one in the ranking does (the protocol's fallback). It ignores the knob.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from routerl.data.outcomes import OutcomeTable
from routerl.data.splits import Splits
from routerl.descriptors.model import ModelDescriptor
from routerl.routers.base import Attempt, Decision, Query, Router

SINGLE_MODEL_COVERAGE = 0.95


def train_accuracy(table: OutcomeTable, splits: Splits | None) -> dict[str, float]:
    """Mean train-split score of each priced *seen* model of ``table`` (unseen rows are not read)."""
    train = table.prompts_in("train")
    seen = table.seen_mask(splits) & table.priced
    have = table.available[train]
    out: dict[str, float] = {}
    for j in np.flatnonzero(seen):
        rows = train[have[:, j]]
        if rows.size:
            out[table.models[j]] = float(table.score[rows, j].mean())
    return out


class BestSingleRouter(Router):
    name = "best-single"

    def __init__(self, accuracy: dict[str, float], single_models: set[str]):
        self.accuracy = dict(accuracy)
        self.single_models = set(single_models)

    @classmethod
    def from_table(cls, table: OutcomeTable | None, splits: Splits | None) -> "BestSingleRouter":
        if table is None:
            return cls({}, set())
        singles = {table.models[j] for j in table.single_models(SINGLE_MODEL_COVERAGE)}
        return cls(train_accuracy(table, splits), singles)

    def key(self, desc: ModelDescriptor) -> tuple[bool, float]:
        acc = self.accuracy.get(desc.id)
        if acc is None:
            acc = desc.overall_score() or 0.0
        return (desc.id in self.single_models, acc)

    def decide(self, query: Query, candidates: Sequence[ModelDescriptor], knob: float, attempts: Sequence[Attempt] = ()) -> Decision:
        if not candidates:
            raise ValueError("no candidates to route to")
        if attempts:
            return Decision("accept", attempts[-1].model_id, [], router=self.name)
        keys = [self.key(c) for c in candidates]
        order = sorted(range(len(candidates)), key=lambda k: (not keys[k][0], -keys[k][1], k))
        best = candidates[order[0]]
        return Decision(
            "route",
            best.id,
            [(candidates[k].id, 1.0 if n == 0 else 0.0) for n, k in enumerate(order)],
            est_cost_usd=best.estimate_cost_usd(query.tokens),
            router=self.name,
        )
