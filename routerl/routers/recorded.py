"""Queries for the recorded prompts of an outcome table (evaluation and fitting).

A recorded prompt's query carries its text, domain, prompt id and prompt token count (the median
over its rows, as the routing environment does; None when no row has one).
"""

from __future__ import annotations

import warnings

import numpy as np

from routerl.data.outcomes import OutcomeTable
from routerl.routers.base import Query, estimate_prompt_tokens


def prompt_token_counts(table: OutcomeTable) -> np.ndarray:
    """``(P,)`` median prompt tokens of each prompt over its rows, NaN where unknown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
        return np.nanmedian(table.prompt_tokens, axis=1)


def recorded_queries(table: OutcomeTable, prompts: np.ndarray | list[int]) -> list[Query]:
    """One ``Query`` per prompt index."""
    tokens = prompt_token_counts(table)
    out = []
    for i in prompts:
        t = tokens[i]
        out.append(
            Query(
                text=table.prompt_text[i],
                prompt_id=table.prompt_ids[i],
                domain=table.domain[i] or None,
                prompt_tokens=float(t) if np.isfinite(t) else None,
            )
        )
    return out


def query_tokens(table: OutcomeTable, prompts: np.ndarray) -> np.ndarray:
    """``(n,)`` token counts of prompts, estimated from the text where no row has one."""
    tokens = prompt_token_counts(table)[prompts]
    missing = ~np.isfinite(tokens)
    for n in np.flatnonzero(missing):
        tokens[n] = estimate_prompt_tokens(table.prompt_text[prompts[n]])
    return tokens
