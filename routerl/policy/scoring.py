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

Serving speed-ups (same numbers, within float rounding):

* ``PrefixCache``: the KV state of a query-independent prompt prefix (system text + candidate
  block) is kept in a bounded, thread-safe LRU keyed by a hash of its token ids; a request runs
  only its suffix on a fork of that state (``fork_cache``: the cache's tensors are never written in
  place by ``update``/``crop``/``batch_repeat_interleave``, so a fork shares them and costs nothing).
* ``option_logprobs``: the options that share a token prefix (every ``<route>k</route>`` starts
  with the tokens of ``<route>``) score that prefix once; only the differing tails (``k</route>``)
  run as branches. The ``</route>`` tokens after the digit are still scored (dropping them would
  change the numbers), so this is exact, not an approximation.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import OrderedDict
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


def fork_cache(cache):
    """A cache that shares ``cache``'s tensors; appending to or repeating it leaves ``cache`` unchanged."""
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    return new


@dataclass
class ContextState:
    """The model state after a context: ``last`` = log-probs of the next token ``(V,)``, or None
    for a state kept from a scoring pass (``packed_logprobs_many``'s ``kept``; continue it with a
    non-empty suffix); ``cache`` holds ``length`` positions (never written in place: use
    ``fork_cache`` before extending it)."""

    last: torch.Tensor | None
    cache: object
    length: int


def _lean(model) -> bool:
    """Whether ``model`` takes the scorer's lean calls (the fused engine's ``lean_scoring``):
    ``real_rows`` for padded batches and ``head=False`` for hidden states without the output head."""
    return getattr(model, "lean_scoring", False)


def _repeat_rows(cache, n: int):
    """``cache`` (a fork with batch 1) seen as ``n`` rows: every layer's keys and values become
    stride-0 views (``expand``), not copies; the next ``update`` concatenates the new rows' keys
    onto them, which writes each row once (``batch_repeat_interleave`` would copy the context
    first, then concatenate)."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys = layer.keys.expand(n, *layer.keys.shape[1:])
            layer.values = layer.values.expand(n, *layer.values.shape[1:])
    return cache


def _ragged_cache(state: ContextState, own: Sequence[ContextState], E: int):
    """A cache of ``len(own)`` rows: ``state``'s ``P`` positions (shared), then row b's own
    positions ``P ..`` of ``own[b]`` right-padded with zeros to ``E`` (masked by the caller). Each
    distinct state is padded once per layer; rows that share it share that tensor."""
    P, B = state.length, len(own)
    uniq = list({id(o): o for o in own}.values())  # each distinct state once, in first-seen order
    slot = {id(o): u for u, o in enumerate(uniq)}
    which = torch.tensor([slot[id(o)] for o in own])
    cache = fork_cache(state.cache)
    for i, layer in enumerate(cache.layers):
        for name in ("keys", "values"):
            shared = getattr(layer, name)  # (1, kvh, P, hd)
            padded = shared.new_zeros((len(uniq), shared.shape[1], E, shared.shape[3]))
            for u, o in enumerate(uniq):
                tail = getattr(o.cache.layers[i], name)[0, :, P:]
                padded[u, :, : tail.shape[1]] = tail
            setattr(layer, name, torch.cat([shared.expand(B, *shared.shape[1:]), padded[which]], dim=2))
    return cache


@torch.no_grad()
def run_context(model, ids: Sequence[int], state: ContextState | None = None) -> ContextState:
    """Run ``ids`` (after ``state`` when given) and return the state after them."""
    if not ids:
        if state is None:
            raise ValueError("empty context")
        return state
    device = _device(model)
    x = torch.tensor([list(ids)], device=device)
    past = fork_cache(state.cache) if state is not None else None
    start = state.length if state is not None else 0
    out = model(input_ids=x, past_key_values=past, use_cache=True, logits_to_keep=1)
    last = out.logits[0, -1, :].float().log_softmax(-1)
    return ContextState(last, out.past_key_values, start + len(ids))


@torch.no_grad()
def _extend_scored(model, state: ContextState, ids: Sequence[int]) -> tuple[float, ContextState]:
    """Log-likelihood of ``ids`` after ``state``, and the state after them."""
    device = _device(model)
    x = torch.tensor([list(ids)], device=device)
    out = model(input_ids=x, past_key_values=fork_cache(state.cache), use_cache=True)
    logp = out.logits[0].float().log_softmax(-1)  # (L, V)
    pred = torch.cat([state.last.unsqueeze(0), logp[:-1]], dim=0)
    total = float(pred.gather(-1, x[0].unsqueeze(-1)).sum())
    return total, ContextState(logp[-1], out.past_key_values, state.length + len(ids))


@torch.no_grad()
def tails_logprobs(model, state: ContextState, tails: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """``(B,)`` log-likelihood of each (non-empty) tail after ``state``. The tails' tokens (but the
    last of each, whose output is not needed) are packed into one sequence of batch 1 with a tree
    attention mask (each token sees the context and the earlier tokens of its own tail, at the
    positions it would have alone), so the context's KV state is never repeated per branch."""
    device = _device(model)
    first = torch.tensor([t[0] for t in tails], device=device)
    total = state.last[first].clone()
    flat, targets, owner, pos = [], [], [], []
    for b, t in enumerate(tails):
        for j in range(len(t) - 1):
            flat.append(t[j])
            targets.append(t[j + 1])
            owner.append(b)
            pos.append(state.length + j)
    N = len(flat)
    if N == 0:
        return total.cpu()
    own = torch.tensor(owner, device=device)
    p = torch.tensor(pos, device=device)
    idx = torch.arange(N, device=device)
    tree = (own[:, None] == own[None, :]) & (idx[None, :] <= idx[:, None])  # (N, N)
    mask = torch.cat([torch.ones((N, state.length), dtype=torch.bool, device=device), tree], dim=1)[None, None]
    out = model(
        input_ids=torch.tensor([flat], device=device), past_key_values=fork_cache(state.cache),
        attention_mask=mask, position_ids=p[None], use_cache=True,
    )  # fmt: skip
    token_logp = out.logits[0].float().log_softmax(-1).gather(-1, torch.tensor(targets, device=device)[:, None]).squeeze(-1)
    return (total + torch.zeros(len(tails), device=device).index_add_(0, own, token_logp)).cpu()


def distinguishing_prefixes(conts: Sequence[Sequence[int]]) -> list[list[int]]:
    """Each continuation cut after its first token that no other continuation shares at that
    position: ``<route>3</route>`` -> ``<route>3``, ``<accept/>`` -> ``<accept``. What follows is
    the grammar's closing tag, which a trained policy predicts with probability ~1, so scoring the
    prefixes ranks the actions as the full texts do at a fraction of the tokens (``action_scoring``
    ``prefix``: 3 instead of 15 extra positions for four routes)."""
    out = []
    for i, c in enumerate(conts):
        shared = max((common_prefix_len([c, o]) for j, o in enumerate(conts) if j != i), default=0)
        out.append(list(c[: min(len(c), shared + 1)]))
    return out


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix that every sequence of ``seqs`` starts with."""
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs[1:]):
            return i
    return n


@torch.no_grad()
def packed_logprobs(
    model, state: ContextState | None, suffix: Sequence[int], conts: Sequence[Sequence[int]], relative: bool = False
) -> torch.Tensor:  # fmt: skip
    """``(A,)`` log-likelihood of each continuation after ``state`` + ``suffix``, in ONE forward
    pass of batch 1: the suffix tokens, then the trie of the continuations (every distinct proper
    prefix once: ``<route>`` is run once for all routes, then each ``k</route>`` tail), packed with
    a tree attention mask and per-token positions; logits are computed only where a continuation
    token is predicted. Equal to ``branch_logprobs`` over ``context + suffix`` within float rounding
    (``relative``: see ``packed_logprobs_many``)."""
    return packed_logprobs_many(model, state, [(suffix, conts)], relative=relative)[0]


@dataclass
class _Plan:
    """One item laid out for scoring: its suffix chain, then the trie of its continuations.
    ``parent``: the previous token of each (-1: the shared context), ``pos``: offsets after the
    context, ``rows``: per continuation, the local row predicting each of its tokens (-1: the
    context's last position)."""

    tokens: list[int]
    parent: list[int]
    pos: list[int]
    rows: list[list[int]]


def _plan(suffix: Sequence[int], conts: Sequence[Sequence[int]], has_state: bool) -> _Plan:
    if any(not c for c in conts):
        raise ValueError("every continuation must be non-empty")
    if not has_state and not suffix:
        raise ValueError("empty context")
    n_suf = len(suffix)
    tokens, parent, pos = list(suffix), list(range(-1, n_suf - 1)), list(range(n_suf))
    root = n_suf - 1  # predicts each continuation's first token (-1: the context's last position)
    trie: dict[tuple[int, ...], int] = {}
    rows_all = []
    for c in conts:
        rows, node = [root], root
        for j in range(len(c) - 1):
            key = tuple(c[: j + 1])
            if key not in trie:
                trie[key] = len(tokens)
                tokens.append(c[j])
                parent.append(node)
                pos.append(n_suf + j)
            node = trie[key]
            rows.append(node)
        rows_all.append(rows)
    return _Plan(tokens, parent, pos, rows_all)


def _ancestors(parent: Sequence[int]) -> torch.Tensor:
    """``(N, N)`` bool: token i may attend to token j (j is i or one of its ancestors)."""
    n = len(parent)
    anc = torch.zeros((n, n), dtype=torch.bool)
    for i in range(n):
        anc[i, i] = True
        if parent[i] >= 0:
            anc[i] |= anc[parent[i]]
    return anc


def _sums(plan: _Plan, conts: Sequence[Sequence[int]], logp_of) -> torch.Tensor:
    return torch.tensor([sum(float(logp_of(r)[t]) for r, t in zip(rows, c)) for rows, c in zip(plan.rows, conts)])


def _same_rows(plan: _Plan) -> bool:
    """Whether every continuation is scored at the same rows (the first call's ``<route>k``
    options: one shared trie path, then the digit), so that each row's normaliser is added to
    every option's sum once and cancels in a softmax over the options."""
    first = sorted(plan.rows[0])
    return all(sorted(rows) == first for rows in plan.rows[1:])


def _row_scores(model, hidden: torch.Tensor, wanted: Sequence[tuple[bool, set[int]]]) -> list:
    """Per kept row ``k`` (``hidden`` ``(R, H)``): with ``wanted[k] = (True, tokens)`` the
    logits of just those tokens (a ``{token: logit}`` dict; the row's normaliser is left out),
    else the full ``(V,)`` log-softmax."""
    head = model.get_output_embeddings()  # weight (V, H)
    out: list = [None] * len(wanted)
    full = [k for k, (rel, _) in enumerate(wanted) if not rel]
    if full:
        logp = head(hidden[full]).float().log_softmax(-1)
        for j, k in enumerate(full):
            out[k] = logp[j]
    for k, (rel, tokens) in enumerate(wanted):
        if rel:
            ids = sorted(tokens)
            logits = (hidden[k : k + 1] @ head.weight[ids].T)[0].float()
            out[k] = dict(zip(ids, logits.tolist()))
    return out


def _wanted(plans: Sequence[_Plan], conts_of: Sequence[Sequence[Sequence[int]]], where: Sequence, relative: bool) -> list[tuple[bool, set[int]]]:
    """For each kept ``(item, row)`` of ``where``: whether it can be scored relatively (the
    item's options share their rows) and which tokens it predicts."""
    same = [relative and _same_rows(p) for p in plans]
    tokens: dict[tuple[int, int], set[int]] = {}
    for b, (plan, conts) in enumerate(zip(plans, conts_of)):
        for rows, c in zip(plan.rows, conts):
            for r, t in zip(rows, c):
                tokens.setdefault((b, r), set()).add(t)
    return [(same[b], tokens[(b, r)]) for b, r in where]


@torch.no_grad()
def packed_logprobs_many(
    model, state: ContextState | None, items: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
    states: Sequence[ContextState] | None = None, relative: bool = False, kept: list | None = None,
) -> list[torch.Tensor]:  # fmt: skip
    """``packed_logprobs`` for several requests that share the context ``state`` (e.g. the cached
    system message). One item: ONE forward pass of batch 1 over its suffix chain and continuation
    trie (tree attention mask, per-token positions, logits only where a continuation token is
    predicted). Several items (the server's micro-batches): ``padded_logprobs_many``, one pass of
    batch ``B`` over the context's KV state repeated per row. ``states`` (optional, one per item):
    each item continues its own state, which extends ``state`` by a few tokens (the server's
    cached knob lines after the shared system message). Returns one ``(A_i,)`` tensor per
    item, each equal to ``packed_logprobs`` of that item alone within float rounding.

    ``relative`` (for callers that only softmax the scores over an item's options): where every
    option of an item is scored at the same rows (``_same_rows``), an item's scores may differ from
    its log-likelihoods by one constant (the rows' normalisers, which cancel in that softmax), and
    with a model that returns hidden states without its head (the fused engine) only the options'
    own token logits are computed at those rows, not the full-vocabulary head (49,152 x 576
    multiply-adds and a 57 MB weight read per row for SmolLM2-135M).

    ``kept`` (a list, filled in item order): the state after each item's context + suffix, taken
    from the same pass (a suffix is laid out before its continuations, so its keys and values are
    already in the pass's cache), or None for an empty suffix. A multi-round request's next turn
    continues that state instead of running its first turn again (``PolicyRouter``'s turn
    cache). Such a state has no ``last``: continue it with a non-empty suffix."""
    if not items:
        return []
    if len(items) > 1 and state is not None:
        return padded_logprobs_many(model, state, items, states, relative, kept)
    if states is not None:  # one item after its own state
        return [packed_logprobs_many(model, own, [item], relative=relative, kept=kept)[0] for own, item in zip(states, items)]
    out = []
    for suffix, conts in items:  # one pass each
        scores, cache = _packed_one(model, state, suffix, conts, relative)
        out.append(scores)
        if kept is not None:
            past = state.length if state is not None else 0
            kept.append(_kept_state(cache, 0, [(0, past + len(suffix))]) if suffix else None)
    return out


def _packed_one(model, state: ContextState | None, suffix: Sequence[int], conts: Sequence[Sequence[int]], relative: bool):
    """One item's packed pass (``packed_logprobs_many``): ``(scores (A,), the pass's cache or None)``.
    The cache holds the context's positions, then the item's packed tokens (its suffix first)."""
    plan = _plan(suffix, conts, state is not None)
    past = state.length if state is not None else 0
    logp_rows: dict[int, torch.Tensor] = {-1: state.last} if state is not None else {}
    cache = None
    if plan.tokens:
        device = _device(model)
        N = len(plan.tokens)
        mask = torch.cat([torch.ones((N, past), dtype=torch.bool), _ancestors(plan.parent)], dim=1)[None, None].to(device)
        needed = sorted({r for rows in plan.rows for r in rows if r >= 0})
        head = not (relative and _same_rows(plan) and _lean(model))
        res = model(
            input_ids=torch.tensor([plan.tokens], device=device),
            past_key_values=fork_cache(state.cache) if state is not None else None,
            attention_mask=mask, position_ids=torch.tensor([[past + p for p in plan.pos]], device=device), use_cache=True,
            logits_to_keep=torch.tensor(needed, device=device), **({} if head else {"head": False}),
        )  # fmt: skip
        cache = res.past_key_values
        if head:
            logp = res.logits[0].float().log_softmax(-1)
            logp_rows.update({r: logp[k] for k, r in enumerate(needed)})
        else:
            wanted = _wanted([plan], [conts], [(0, r) for r in needed], True)
            logp_rows.update(dict(zip(needed, _row_scores(model, res.last_hidden_state[0], wanted))))
    return _sums(plan, conts, logp_rows.__getitem__), cache


def _kept_state(cache, row: int, spans: Sequence[tuple[int, int]]) -> ContextState:
    """The state made of positions ``spans`` (``[(start, stop)]``, in order) of batch row ``row`` of
    a pass's ``cache`` (slices when there is one span and one row, else new tensors); ``last`` is
    None (``ContextState``)."""
    kept = fork_cache(cache)
    for layer in kept.layers:
        for name in ("keys", "values"):
            t = getattr(layer, name)
            parts = [t[row : row + 1, :, a:b] for a, b in spans if b > a]
            setattr(layer, name, parts[0] if len(parts) == 1 and t.shape[0] == 1 else torch.cat(parts, dim=2))
    return ContextState(None, kept, sum(b - a for a, b in spans))


@torch.no_grad()
def padded_logprobs_many(
    model, state: ContextState, items: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
    states: Sequence[ContextState] | None = None, relative: bool = False, kept: list | None = None,
) -> list[torch.Tensor]:  # fmt: skip
    """Several items after the shared context ``state`` in ONE forward pass of shape ``(B, S)``:
    row b holds item b's suffix and continuation trie (``_plan``), right-padded to the longest.
    The context's KV state is seen once per row (``fork_cache`` + ``_repeat_rows``: stride-0 views;
    the cached tensors are not written).

    ``states`` (optional, one per item): item b continues ``states[b]``, a state that extends
    ``state`` by ``E_b`` tokens (e.g. a cached knob line after the cached system message). Those
    ``E_b`` positions of each row's cache follow the shared ``P``, right-padded to the largest
    ``E``, so requests with different knob lines share one pass without re-running their lines.

    Mask ``(B, 1, S, P + E + S)``: the context, the row's own extension, then the row's own
    ancestors (padding attends to the context only and is never attended to); positions continue
    each row's own state. Only the positions that predict a continuation token go through the
    output head; the fused forward (``_lean``) also projects only the real tokens. Each
    row equals ``packed_logprobs`` of its item alone after its state within float rounding;
    attention costs ``B x S x (P + E + S)`` instead of a single packed row's ``(B S) x (P + B S)``.
    ``relative`` and ``kept``: as in ``packed_logprobs_many``, per item (a kept state joins row
    b's context, extension and suffix positions)."""
    device = _device(model)
    plans = [_plan(suffix, conts, True) for suffix, conts in items]
    B, P = len(plans), state.length
    own = list(states) if states is not None else [state] * B
    if len(own) != B:
        raise ValueError(f"{len(own)} states for {B} items")
    ext = [o.length - P for o in own]
    if min(ext) < 0:
        raise ValueError("every item's state must extend the shared state")
    E = max(ext)
    S = max(1, max(len(p.tokens) for p in plans))
    ids = torch.zeros((B, S), dtype=torch.long)
    pos = torch.full((B, S), P, dtype=torch.long)
    mask = torch.zeros((B, 1, S, P + E + S), dtype=torch.bool)
    mask[:, :, :, :P] = True
    for b, plan in enumerate(plans):
        mask[b, 0, :, P : P + ext[b]] = True
        n = len(plan.tokens)
        if n:
            ids[b, :n] = torch.tensor(plan.tokens)
            pos[b, :n] = torch.tensor(plan.pos) + own[b].length
            mask[b, 0, :n, P + E : P + E + n] = _ancestors(plan.parent)
    cache = _repeat_rows(fork_cache(state.cache), B) if E == 0 else _ragged_cache(state, own, E)
    where = sorted({(b, r) for b, plan in enumerate(plans) for rows in plan.rows for r in rows if r >= 0})
    logp_rows: dict[tuple[int, int], torch.Tensor] = {}
    if _lean(model):  # the fused forward: no projection work on padding
        flat = [b * S + s for b, plan in enumerate(plans) for s in range(len(plan.tokens))]
        index = {f: j for j, f in enumerate(flat)}
        keep = [index[b * S + r] for b, r in where]
        res = model(
            input_ids=ids.to(device), past_key_values=cache, attention_mask=mask.to(device), position_ids=pos.to(device),
            real_rows=torch.tensor(flat, device=device), logits_to_keep=torch.tensor(keep, device=device), head=False,
        )  # fmt: skip
        if where:
            wanted = _wanted(plans, [conts for _, conts in items], where, relative)
            logp_rows = dict(zip(where, _row_scores(model, res.last_hidden_state[0], wanted)))
    else:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
        hidden = decoder(
            input_ids=ids.to(device), past_key_values=cache, attention_mask=mask.to(device), position_ids=pos.to(device), use_cache=True
        ).last_hidden_state  # (B, S, H)
        if where:
            bi = torch.tensor([b for b, _ in where], device=device)
            si = torch.tensor([r for _, r in where], device=device)
            logp = head(hidden[bi, si]).float().log_softmax(-1)  # (R, V)
            logp_rows = {w: logp[k] for k, w in enumerate(where)}
    if kept is not None:  # the pass wrote every row's keys and values into ``cache``
        for b, (suffix, _) in enumerate(items):
            kept.append(_kept_state(cache, b, [(0, P + ext[b]), (P + E, P + E + len(suffix))]) if suffix else None)
    return [
        _sums(plan, conts, lambda r, b=b: own[b].last if r < 0 else logp_rows[(b, r)])
        for b, (plan, (_, conts)) in enumerate(zip(plans, items))
    ]


@torch.no_grad()
def option_logprobs(model, state: ContextState, conts: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """``(A,)`` log-likelihood of each continuation after ``state``. Continuations are grouped by
    their first token; a group of two or more scores its longest common prefix once (one short
    pass), then only the tails as branches. Equal to ``branch_logprobs`` within float rounding."""
    if any(not c for c in conts):
        raise ValueError("every continuation must be non-empty")
    out = torch.zeros(len(conts))
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(conts):
        groups.setdefault(c[0], []).append(i)
    singles = [i for g in groups.values() if len(g) == 1 for i in g]
    if singles:
        out[singles] = tails_logprobs(model, state, [conts[i] for i in singles], pad_id)
    for g in groups.values():
        if len(g) == 1:
            continue
        seqs = [conts[i] for i in g]
        L = min(common_prefix_len(seqs), min(len(s) for s in seqs) - 1)  # every tail keeps >= 1 token
        if L > 0:
            shared, after = _extend_scored(model, state, seqs[0][:L])
        else:
            shared, after = 0.0, state
        out[g] = shared + tails_logprobs(model, after, [s[L:] for s in seqs], pad_id)
    return out


class PrefixCache:
    """Bounded, thread-safe LRU of ``ContextState`` keyed by a hash of the prefix token ids."""

    def __init__(self, max_entries: int = 64):
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._items: OrderedDict[str, ContextState] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(ids: Sequence[int]) -> str:
        return hashlib.sha256(torch.tensor(list(ids), dtype=torch.int64).numpy().tobytes()).hexdigest()

    def __len__(self) -> int:
        return len(self._items)

    def lookup(self, ids: Sequence[int]) -> ContextState | None:
        """The cached state after ``ids``, or None (nothing is computed)."""
        k = self.key(ids)
        with self._lock:
            state = self._items.get(k)
            if state is None:
                self.misses += 1
                return None
            self._items.move_to_end(k)
            self.hits += 1
            return state

    def put(self, ids: Sequence[int], state: ContextState) -> None:
        """Cache ``state`` as the state after ``ids`` (the least recently used entry goes first)."""
        k = self.key(ids)
        with self._lock:
            self._items[k] = state
            self._items.move_to_end(k)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def get(self, model, ids: Sequence[int], base: int = 0) -> ContextState:
        """The state after ``ids`` (computed on a miss; two threads missing together both compute).
        ``base`` > 0: on a miss, run only ``ids[base:]`` after the (cached) state of ``ids[:base]``."""
        state = self.lookup(ids)
        if state is not None:
            return state
        if 0 < base < len(ids):
            state = run_context(model, ids[base:], self.get(model, ids[:base]))
        else:
            state = run_context(model, ids)
        self.put(ids, state)
        return state


def score_actions(model, tokenizer, context_ids: Sequence[int], options: Sequence[ActionOption]) -> torch.Tensor:
    """``(A,)`` probabilities of ``options`` after ``context_ids`` (softmax over sequence log-likelihoods)."""
    if not options:
        raise ValueError("no action to score")
    conts = [tokenizer(o.text, add_special_tokens=False)["input_ids"] for o in options]
    logp = branch_logprobs(model, context_ids, [((), c) for c in conts], tokenizer.pad_token_id)
    return torch.softmax(logp, dim=-1)
