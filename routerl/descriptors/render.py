"""The compact, stable text rendering of candidates that the policy reads.

Candidates are named by their 1-based position in the list, never by model id, so a policy cannot
memorise models and a model registered at run time is read like any other. One line each::

    [1] est $0.21/1k q (in $0.15 out $0.60 /Mtok), 800 ms; math 0.42 (n=80), all 0.61; near 0.55

* ``est $X/1k q``: estimated cost per 1,000 queries like this one (prompt tokens x input price +
  typical answer tokens x output price);
* the latency when known;
* the sample score on the query's domain (or every domain with ``all_domains=True``), with the
  probe count behind it, and ``all``, the overall probe score;
* ``near``: per-query evidence when the caller supplies it (e.g. the candidate's mean score on the
  probe prompts nearest to this query).

Numbers are rounded to fixed precision so the same inputs always give the same text.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from routerl.descriptors.model import ModelDescriptor


def format_usd_per_1k(usd_per_query: float) -> str:
    per_1k = usd_per_query * 1000.0
    if per_1k >= 10:
        return f"${per_1k:.0f}"
    if per_1k >= 0.1:
        return f"${per_1k:.2f}"
    return f"${per_1k:.3f}"


def render_candidate(
    position: int,
    desc: ModelDescriptor,
    prompt_tokens: float,
    domain: str | None = None,
    evidence: float | None = None,
    all_domains: bool = False,
) -> str:
    parts = [
        f"[{position}] est {format_usd_per_1k(desc.estimate_cost_usd(prompt_tokens))}/1k q "
        f"(in ${desc.input_price_per_mtok:g} out ${desc.output_price_per_mtok:g} /Mtok)"
    ]
    if desc.latency_ms:
        parts[0] += f", {desc.latency_ms:.0f} ms"
    scores = []
    domains = sorted(desc.sample_scores) if all_domains else [d for d in (domain,) if d in desc.sample_scores]
    for d in domains:
        n = desc.sample_counts.get(d)
        scores.append(f"{d} {desc.sample_scores[d]:.2f}" + (f" (n={n})" if n else ""))
    overall = desc.overall_score()
    if overall is not None:
        scores.append(f"all {overall:.2f}")
    if scores:
        parts.append(", ".join(scores))
    if evidence is not None:
        parts.append(f"near {evidence:.2f}")
    return "; ".join(parts)


def render_candidates(
    candidates: Sequence[ModelDescriptor],
    prompt_tokens: float,
    domain: str | None = None,
    evidence: Mapping[int, float] | Sequence[float] | None = None,
    all_domains: bool = False,
) -> str:
    """Render candidates as numbered lines (1-based). ``evidence[k]`` is the per-query evidence of
    the k-th candidate (0-based index)."""
    lines = []
    for k, desc in enumerate(candidates):
        ev = None
        if evidence is not None:
            ev = evidence.get(k) if isinstance(evidence, Mapping) else evidence[k]
        lines.append(render_candidate(k + 1, desc, prompt_tokens, domain, ev, all_domains))
    return "\n".join(lines)
