"""Descriptors from probe-split rows.

For a model, over the probe prompts it answered (a priced row exists):

* ``sample_scores[d]`` = mean score on domain ``d``'s probe prompts, ``sample_counts[d]`` their number;
* ``probe_results[prompt_id]`` = its score on each probe prompt;
* ``mean_output_tokens`` = mean response tokens on probe prompts;
* prices from the table.

Only probe rows and prices are read, for seen and unseen models alike (the protocol).
"""

from __future__ import annotations

import numpy as np

from routerl.data.outcomes import OutcomeTable
from routerl.descriptors.model import ModelDescriptor


def build_descriptor(table: OutcomeTable, model: str, probe_prompts: np.ndarray | None = None) -> ModelDescriptor:
    """The descriptor of ``model`` from its probe rows (``probe_prompts`` defaults to the probe split)."""
    j = table.model_index(model)
    if not table.priced[j]:
        raise ValueError(f"model {model!r} has no price in {table.source or table.name}; it cannot be described")
    probe = table.prompts_in("probe") if probe_prompts is None else np.asarray(probe_prompts)
    rows = probe[table.available[probe, j]]
    scores: dict[str, list[float]] = {}
    results: dict[str, float] = {}
    for i in rows:
        s = float(table.score[i, j])
        scores.setdefault(table.domain[i], []).append(s)
        results[table.prompt_ids[i]] = s
    out_tokens = table.response_tokens[rows, j]
    out_tokens = out_tokens[np.isfinite(out_tokens)]
    return ModelDescriptor(
        id=model,
        input_price_per_mtok=float(table.input_price[j]),
        output_price_per_mtok=float(table.output_price[j]),
        sample_scores={d: round(float(np.mean(v)), 4) for d, v in sorted(scores.items())},
        sample_counts={d: len(v) for d, v in sorted(scores.items())},
        probe_results=results,
        mean_output_tokens=round(float(out_tokens.mean()), 1) if out_tokens.size else 0.0,
    )


def build_descriptors(table: OutcomeTable, models: list[str] | None = None) -> dict[str, ModelDescriptor]:
    """Descriptors of every priced model (or of ``models``), keyed by id."""
    names = models if models is not None else [m for j, m in enumerate(table.models) if table.priced[j]]
    probe = table.prompts_in("probe")
    return {m: build_descriptor(table, m, probe) for m in names}
