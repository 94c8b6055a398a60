"""Descriptors from probe-split rows.

For a model, over the probe prompts it answered (a priced row exists):

* ``sample_scores[d]`` = mean score on domain ``d``'s probe prompts, ``sample_counts[d]`` their number;
* ``probe_results[prompt_id]`` = its score on each probe prompt;
* ``mean_output_tokens`` = mean response tokens on probe prompts;
* prices from the table.

Only probe rows and prices are read, for seen and unseen models alike (the protocol).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from routerl.data.outcomes import OutcomeTable
from routerl.descriptors.model import ModelDescriptor


@dataclass(frozen=True)
class ProbeEvidence:
    """A model's evidence from its probe results: the descriptor fields that come from probing."""

    sample_scores: dict[str, float]
    sample_counts: dict[str, int]
    probe_results: dict[str, float]
    mean_output_tokens: float


def probe_evidence(outcomes: Iterable[tuple[str, str, float, float]]) -> ProbeEvidence:
    """Evidence from ``(prompt_id, domain, score, response_tokens)`` tuples, one per answered probe
    prompt (``response_tokens`` may be NaN when unknown). The one computation behind both the
    offline descriptors (``build_descriptor``) and live probing (``routerl.live.probe``)."""
    scores: dict[str, list[float]] = {}
    results: dict[str, float] = {}
    tokens: list[float] = []
    for prompt_id, domain, score, response_tokens in outcomes:
        s = float(score)
        scores.setdefault(domain, []).append(s)
        results[prompt_id] = s
        tokens.append(response_tokens)
    out_tokens = np.asarray(tokens, dtype=np.float32)
    out_tokens = out_tokens[np.isfinite(out_tokens)]
    return ProbeEvidence(
        sample_scores={d: round(float(np.mean(v)), 4) for d, v in sorted(scores.items())},
        sample_counts={d: len(v) for d, v in sorted(scores.items())},
        probe_results=results,
        mean_output_tokens=round(float(out_tokens.mean()), 1) if out_tokens.size else 0.0,
    )


def build_descriptor(table: OutcomeTable, model: str, probe_prompts: np.ndarray | None = None) -> ModelDescriptor:
    """The descriptor of ``model`` from its probe rows (``probe_prompts`` defaults to the probe split)."""
    j = table.model_index(model)
    if not table.priced[j]:
        raise ValueError(f"model {model!r} has no price in {table.source or table.name}; it cannot be described")
    probe = table.prompts_in("probe") if probe_prompts is None else np.asarray(probe_prompts)
    rows = probe[table.available[probe, j]]
    evidence = probe_evidence(
        (table.prompt_ids[i], table.domain[i], table.score[i, j], table.response_tokens[i, j]) for i in rows
    )
    return ModelDescriptor(
        id=model,
        input_price_per_mtok=float(table.input_price[j]),
        output_price_per_mtok=float(table.output_price[j]),
        sample_scores=evidence.sample_scores,
        sample_counts=evidence.sample_counts,
        probe_results=evidence.probe_results,
        mean_output_tokens=evidence.mean_output_tokens,
    )


def build_descriptors(table: OutcomeTable, models: list[str] | None = None) -> dict[str, ModelDescriptor]:
    """Descriptors of every priced model (or of ``models``), keyed by id."""
    names = models if models is not None else [m for j, m in enumerate(table.models) if table.priced[j]]
    probe = table.prompts_in("probe")
    return {m: build_descriptor(table, m, probe) for m in names}
