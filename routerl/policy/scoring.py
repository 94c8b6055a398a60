"""Fast mode: score every action's continuation and return a probability per action.

Given a context (prompt ids, possibly followed by an open ``<think>``), each allowed action text
(``<route>k</route>`` for every candidate not yet called, and ``<accept/>`` once an answer exists)
is scored by its sequence log-likelihood under the policy::

    logp(a) = sum_t log p(a_t | context, a_<t)        probs = softmax(logp)

The context is run once (one forward pass of shape ``(1, P)``), its KV cache is repeated for every
branch, and all branches run in one batched forward pass of shape ``(B, S)`` (right-padded; the
padding sits after each branch's real tokens, so causal attention never sees it). A branch is a
shared-context suffix plus an action continuation, so one call can score several knob values of
the same query at once (``PolicyRouter.decide_many``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from routerl.env.actions import ACCEPT_TAG, THINK_CLOSE, format_route


@dataclass(frozen=True)
class ActionOption:
    """One allowed action: ``index`` is the 0-based candidate position, None for accept."""

    text: str
    index: int | None

    @property
    def is_accept(self) -> bool:
        return self.index is None


def action_options(
    n_candidates: int, called: Sequence[int] = (), allow_accept: bool = False, close_think: bool = False
) -> list[ActionOption]:
    """Every allowed action in candidate order (accept last). ``close_think`` prefixes each text
    with ``</think>`` (scoring after a forced close of an open think)."""
    prefix = THINK_CLOSE if close_think else ""
    out = [ActionOption(prefix + format_route(k), k) for k in range(n_candidates) if k not in set(called)]
    if allow_accept:
        out.append(ActionOption(prefix + ACCEPT_TAG, None))
    return out


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def branch_logprobs(model, prefix_ids: Sequence[int], branches: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int) -> torch.Tensor:
    """Log-likelihood of each branch's continuation given ``prefix + branch context``.

    Args:
        prefix_ids: shared context token ids, length ``P >= 1``.
        branches: ``B`` pairs ``(context_suffix_ids, continuation_ids)``; the continuation is non-empty.
        pad_id: id used to right-pad branches (never attended to by real tokens).

    Returns:
        ``(B,)`` float32 tensor: ``sum_t log p(continuation_t | ...)``.
    """
    if not prefix_ids:
        raise ValueError("prefix_ids must not be empty")
    device = _device(model)
    prefix = torch.tensor([list(prefix_ids)], device=device)  # (1, P)
    out = model(input_ids=prefix, use_cache=True)
    last = out.logits[:, -1, :].float().log_softmax(-1)  # (1, V)
    cache = out.past_key_values
    B = len(branches)
    seqs = [list(ctx) + list(cont) for ctx, cont in branches]
    S = max(len(s) for s in seqs)
    ids = torch.full((B, S), pad_id, dtype=torch.long, device=device)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s, device=device)
    cache.batch_repeat_interleave(B)
    P = len(prefix_ids)
    attention = torch.ones((B, P + S), dtype=torch.long, device=device)
    logits = model(input_ids=ids, past_key_values=cache, attention_mask=attention, use_cache=True).logits  # (B, S, V)
    logp = logits.float().log_softmax(-1)
    # Token s of a branch is predicted by position s-1 of the branch, or by the prefix's last position.
    pred = torch.cat([last.expand(B, -1).unsqueeze(1), logp[:, :-1, :]], dim=1)  # (B, S, V)
    token_logp = pred.gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # (B, S)
    mask = torch.zeros((B, S), dtype=torch.bool, device=device)
    for b, (ctx, cont) in enumerate(branches):
        if not cont:
            raise ValueError("every branch needs a non-empty continuation")
        mask[b, len(ctx) : len(ctx) + len(cont)] = True
    return (token_logp * mask).sum(-1).cpu()


def score_actions(model, tokenizer, context_ids: Sequence[int], options: Sequence[ActionOption]) -> torch.Tensor:
    """``(A,)`` probabilities of ``options`` after ``context_ids`` (softmax over sequence log-likelihoods)."""
    if not options:
        raise ValueError("no action to score")
    conts = [tokenizer(o.text, add_special_tokens=False)["input_ids"] for o in options]
    logp = branch_logprobs(model, context_ids, [((), c) for c in conts], tokenizer.pad_token_id)
    return torch.softmax(logp, dim=-1)
