"""Think mode: generate one turn (``<think>...</think>`` then an action) under a token budget.

``generate_turns`` samples (or greedily decodes) one policy turn for a batch of contexts and stops
each sequence right after its action closes (``</route>`` or ``<accept/>``), at end-of-turn, or
after ``max_new_tokens``. The training rollout and the router share it.

``think_then_act`` is the serving decision: generate up to ``think_budget + action_tokens``
tokens; if the turn holds a valid action, take it. If the budget ran out inside an open
``<think>``, force-close it and require an action: every allowed ``</think><route>k</route>``
(and ``</think><accept/>``) continuation is scored and the best taken. Any other malformed turn
falls back to the fast-mode ranking of the bare prompt. The ranking returned is always the scored
distribution over allowed actions (conditioned on the think text when there is one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from routerl.env.actions import ACCEPT_TAG, ROUTE_CLOSE, THINK_CLOSE, THINK_OPEN, Action, parse_action
from routerl.policy.scoring import ActionOption, action_options, score_actions

STOP_STRINGS = (ROUTE_CLOSE, ACCEPT_TAG)


def _end_ids(tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    return {i for i in ids if i is not None}


def cut_turn(tokenizer, ids: Sequence[int]) -> list[int]:
    """The ids of one turn: up to and including the first completed action or end-of-turn token."""
    ends = _end_ids(tokenizer)
    out: list[int] = []
    for tok in ids:
        out.append(int(tok))
        if tok in ends:
            break
        tail = tokenizer.decode(out[-8:], skip_special_tokens=False)
        if any(s in tail for s in STOP_STRINGS):
            # Confirm against the whole text (a stop string may straddle the 8-token window).
            text = tokenizer.decode(out, skip_special_tokens=False)
            if any(s in text for s in STOP_STRINGS):
                break
    return out


@torch.no_grad()
def generate_turns(
    model,
    tokenizer,
    contexts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
) -> list[list[int]]:
    """One turn per context. ``contexts``: ``N`` token-id lists (left-padded into ``(N, L)``);
    returns ``N`` lists of new token ids, each cut by ``cut_turn``."""
    device = next(model.parameters()).device
    L = max(len(c) for c in contexts)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(contexts), L), pad, dtype=torch.long)
    mask = torch.zeros((len(contexts), L), dtype=torch.long)
    for i, c in enumerate(contexts):
        ids[i, L - len(c) :] = torch.tensor(list(c))
        mask[i, L - len(c) :] = 1
    kwargs = dict(do_sample=do_sample)
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k or None)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max_new_tokens,
        stop_strings=list(STOP_STRINGS),
        tokenizer=tokenizer,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
        **kwargs,
    )  # (N, L + T)
    return [cut_turn(tokenizer, row[L:].tolist()) for row in out.cpu()]


@dataclass
class TurnDecision:
    """The outcome of one think-mode turn.

    ``action``: the action taken (always valid); ``options``/``probs``: the allowed actions and their
    scored probabilities (the ranking); ``text``: what the model generated; ``forced``: the think was
    force-closed at the budget; ``fallback``: the turn was malformed and the fast-mode ranking decided.
    """

    action: Action
    options: list[ActionOption]
    probs: torch.Tensor
    text: str = ""
    think: str = ""
    forced: bool = False
    fallback: bool = False
    error: str = field(default="")


def _valid(action: Action, options: Sequence[ActionOption]) -> bool:
    if action.kind == "route":
        return any(o.index == action.index for o in options)
    return action.kind == "accept" and any(o.is_accept for o in options)


def open_think(text: str) -> str | None:
    """The think text when ``text`` opened a ``<think>`` that never closed (the budget ran out)."""
    start = text.find(THINK_OPEN)
    if start < 0 or THINK_CLOSE in text[start:]:
        return None
    body = text[start + len(THINK_OPEN) :]
    for tag in ("<route>", "<accept", "<"):
        # A half-written tag at the very end is not think text.
        cut = body.rfind(tag)
        if cut >= 0 and ">" not in body[cut:]:
            body = body[:cut]
            break
    return body


def think_then_act(
    model,
    tokenizer,
    prompt_ids: Sequence[int],
    n_candidates: int,
    *,
    called: Sequence[int] = (),
    allow_accept: bool = False,
    think_budget: int = 48,
    action_tokens: int = 12,
) -> TurnDecision:
    """Greedy think-mode decision for one prompt (see the module docstring)."""
    if not action_options(n_candidates, called, allow_accept):
        raise ValueError("no allowed action (every candidate was called and accept is not allowed)")
    new_ids = generate_turns(model, tokenizer, [prompt_ids], think_budget + action_tokens)[0]
    return act_on_turn(model, tokenizer, prompt_ids, new_ids, n_candidates, called=called, allow_accept=allow_accept)


def act_on_turn(
    model,
    tokenizer,
    prompt_ids: Sequence[int],
    new_ids: Sequence[int],
    n_candidates: int,
    *,
    called: Sequence[int] = (),
    allow_accept: bool = False,
) -> TurnDecision:
    """The decision for a generated turn ``new_ids``: its action if valid, else a forced or
    fast-mode action; the ranking is scored in either case (see the module docstring)."""
    options = action_options(n_candidates, called, allow_accept)
    if not options:
        raise ValueError("no allowed action (every candidate was called and accept is not allowed)")
    text = tokenizer.decode(list(new_ids), skip_special_tokens=True)
    action = parse_action(text, n_candidates)
    think = action.think
    if _valid(action, options):
        # Rank the alternatives in the context the model itself wrote (its think, closed).
        context = list(prompt_ids) + (tokenizer(THINK_OPEN + think, add_special_tokens=False)["input_ids"] if think else [])
        scored = action_options(n_candidates, called, allow_accept, close_think=bool(think))
        probs = score_actions(model, tokenizer, context, scored)
        return TurnDecision(action, options, probs, text, think)
    think_text = open_think(text)
    if think_text is not None:
        context = list(prompt_ids) + tokenizer(THINK_OPEN + think_text, add_special_tokens=False)["input_ids"]
        probs = score_actions(model, tokenizer, context, action_options(n_candidates, called, allow_accept, close_think=True))
        forced, fallback, think = True, False, think_text.strip()
    else:
        probs = score_actions(model, tokenizer, prompt_ids, options)
        forced, fallback = False, True
    best = options[int(torch.argmax(probs))]
    chosen = Action("accept" if best.is_accept else "route", best.index, think, False, action.error or "budget ran out")
    return TurnDecision(chosen, options, probs, text, think, forced, fallback, action.error)
