"""Render a routing decision as a chat prompt for the policy LM.

The prompt is the chat template applied to two messages, followed by the transcript of earlier
calls of this request (if any), after the assistant header::

    <system>   SYSTEM_TEXT: the action grammar and the cost knob (fixed text)
    <user>     Candidates:               <- first, and query-independent, so the KV state of
               [1] in $0.15 out $0.6 /Mtok, ~300 answer tokens; code 0.55 (n=40), math 0.42 (n=80), all 0.61
               [2] ...                   <- [system + candidates] is cached across requests
               Query (math, 120 tokens): <text, long ones cut in the middle>
               Est $ per 1k queries like this one, [1] to [2]: 0.21 0.050
               Cost knob: 0.1 score points per $ per 1k queries. Calls allowed: 2.

``split_prompt`` returns the length of that cacheable prefix (it ends after the candidate block, so
its text depends only on the pool's descriptors, never on the query, the knob or the attempts).
    <assistant> <route>2</route><info>[2] answered (cost $0.210/1k q): ...</info>   <- transcript

Shortlist mode (``evidence``: per-query accuracy estimates of the shown candidates) has three
styles (``PROMPT_STYLES``); the system message is query-independent there, and so is the knob line
of ``compact`` and ``dense`` (below): that is what is cached:

* ``verbose``: ``Query (math, 8 tokens): ...``, then ``[1] est. accuracy 0.95, est. cost $0.18``
  per candidate, then the knob and call-limit sentence (~150 tokens after the system message for
  a short query).
* ``compact``: the same numbers in fewer tokens (88 against 152 on average for the bench queries)::

      knob 0.1, calls 2
      [1] 95 0.18          <- estimated accuracy in %, estimated $ per 1k queries like this one
      [2] 86 0.064
      Q: <query text, long ones cut in the middle>

* ``dense``: the compact layout with fewer tokens per candidate line (8 instead of 12 or 13:
  SmolLM2 writes every digit as a token)::

      knob 0.1, calls 2
      1 95 .18             <- candidate number, estimated accuracy in %, estimated $ per 1k queries
      2 86 .064

In ``compact`` and ``dense`` the first line of the user message (knob and call limit) does not
depend on the query either, so ``split_prompt`` ends the cached prefix after it: a request runs
only its candidate lines and its query.

The transcript is exactly the token stream a multi-round training rollout produces (the policy's
action, then the environment's ``<info>`` block), so the policy reads the same text in training and
in serving: both write the ``<info>`` block with ``routerl.env.actions.info_block``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from routerl.descriptors.model import ModelDescriptor
from routerl.descriptors.render import format_usd_per_1k
from routerl.env.actions import format_route, info_block
from routerl.routers.base import Attempt, Query

SYSTEM_TEXT = (
    "You route a query to one of the candidate models listed by number with: prices per million "
    "tokens, typical answer tokens, accuracy on sample prompts per domain (n = samples) and overall "
    "(all). After the query: estimated cost per 1k queries like this one.\n"
    "Pick the best expected accuracy minus knob x cost (knob 0: best quality at any cost).\n"
    "Reply: optional brief reasoning in <think>...</think>, then one action: <route>k</route> calls "
    "candidate k; its answer comes back in <info>...</info>; then <accept/> it or route to another, "
    "within the calls allowed."
)


SYSTEM_TEXT_EVIDENCE = (
    "You route a query to one of the candidate models listed by number, each with its estimated "
    "accuracy on this query (from its results on similar sample prompts) and its estimated cost per "
    "1k queries like this one.\n"
    "Pick the best expected accuracy minus knob x cost (knob 0: best quality at any cost).\n"
    "Reply: optional brief reasoning in <think>...</think>, then one action: <route>k</route> calls "
    "candidate k; its answer comes back in <info>...</info>; then <accept/> it if it looks right or "
    "route to another, within the calls allowed."
)


def _line_system_text(line: str) -> str:
    """The system message of the one-line-per-candidate styles, whose lines read ``line``."""
    return (
        f"You route a query to one of the candidate models. Each line {line} shows candidate k's "
        "estimated accuracy a on this query, in % (from its results on similar sample prompts), and "
        "its estimated cost c in $ per 1k queries like this one.\n"
        "Pick the best expected accuracy minus knob x cost (knob 0: best quality at any cost).\n"
        "Reply: optional brief reasoning in <think>...</think>, then one action: <route>k</route> calls "
        "candidate k; its answer comes back in <info>...</info>; then <accept/> it if it looks right or "
        "route to another, within the calls allowed."
    )


SYSTEM_TEXT_COMPACT = _line_system_text("[k] a c")
SYSTEM_TEXT_DENSE = _line_system_text("k a c")

PROMPT_STYLES = ("verbose", "compact", "dense")
HEADER_STYLES = ("compact", "dense")  # styles whose user message starts with the query-independent knob line


def check_style(style: str, field: str = "prompt_style") -> None:
    if style not in PROMPT_STYLES:
        raise ValueError(f"field '{field}': must be one of {', '.join(PROMPT_STYLES)}, got {style!r}")


def system_text(evidence: bool, style: str = "verbose") -> str:
    """The system message: descriptor mode, or shortlist mode (``evidence``) in ``style``."""
    check_style(style)
    if not evidence:
        return SYSTEM_TEXT
    return {"compact": SYSTEM_TEXT_COMPACT, "dense": SYSTEM_TEXT_DENSE}.get(style, SYSTEM_TEXT_EVIDENCE)


def _cut(text: str, max_chars: int) -> str:
    """Keep the head and the tail of a long text."""
    if len(text) <= max_chars:
        return text
    head = max_chars // 2
    return text[:head] + " ... " + text[len(text) - (max_chars - head) :]


def candidate_line(position: int, desc: ModelDescriptor) -> str:
    """One query-independent candidate line (1-based ``position``)."""
    head = f"[{position}] in ${desc.input_price_per_mtok:g} out ${desc.output_price_per_mtok:g} /Mtok, ~{desc.output_tokens:.0f} answer tokens"
    if desc.latency_ms:
        head += f", {desc.latency_ms:.0f} ms"
    scores = []
    for d in sorted(desc.sample_scores):
        n = desc.sample_counts.get(d)
        scores.append(f"{d} {desc.sample_scores[d]:.2f}" + (f" (n={n})" if n else ""))
    overall = desc.overall_score()
    if overall is not None:
        scores.append(f"all {overall:.2f}")
    return "; ".join([head] + ([", ".join(scores)] if scores else []))


def candidate_block(candidates: Sequence[ModelDescriptor]) -> str:
    """``Candidates:`` and one line per candidate: the cacheable part of the user message."""
    return "\n".join(["Candidates:"] + [candidate_line(k + 1, c) for k, c in enumerate(candidates)])


def cost_line(candidates: Sequence[ModelDescriptor], prompt_tokens: float) -> str:
    """The query-dependent cost estimates (shown after the query)."""
    costs = " ".join(format_usd_per_1k(c.estimate_cost_usd(prompt_tokens)).lstrip("$") for c in candidates)
    return f"Est $ per 1k queries like this one, [1] to [{len(candidates)}]: {costs}"


def evidence_block(candidates: Sequence[ModelDescriptor], estimates: Sequence[float], prompt_tokens: float) -> str:
    """Shortlist mode: ``Candidates:`` and one line per candidate with its per-query estimates."""
    lines = ["Candidates:"]
    for k, (c, est) in enumerate(zip(candidates, estimates)):
        cost = format_usd_per_1k(c.estimate_cost_usd(prompt_tokens))
        lines.append(f"[{k + 1}] est. accuracy {est:.2f}, est. cost {cost}")
    return "\n".join(lines)


def header_line(knob: float, max_rounds: int) -> str:
    """The first line of a ``compact`` or ``dense`` user message (query-independent)."""
    return f"knob {knob:g}, calls {max_rounds}"


def compact_user_text(
    query: Query, candidates: Sequence[ModelDescriptor], knob: float, max_rounds: int, max_query_chars: int, evidence: Sequence[float], style: str = "compact"
) -> str:
    """Shortlist mode, ``compact`` or ``dense`` style: knob and call limit, one line per candidate
    (``[k] accuracy% cost``; dense: ``k accuracy% cost`` with the cost's leading ``0`` dropped),
    then the query."""
    lines = [header_line(knob, max_rounds)]
    for k, (c, est) in enumerate(zip(candidates, evidence)):
        cost = format_usd_per_1k(c.estimate_cost_usd(query.tokens)).lstrip("$")
        acc = f"{100 * min(max(float(est), 0.0), 1.0):.0f}"
        if style == "dense":
            lines.append(f"{k + 1} {acc} {cost[1:] if cost.startswith('0.') else cost}")
        else:
            lines.append(f"[{k + 1}] {acc} {cost}")
    lines.append(f"Q: {_cut(query.text.strip(), max_query_chars)}")
    return "\n".join(lines)


def user_text(
    query: Query,
    candidates: Sequence[ModelDescriptor],
    knob: float,
    max_rounds: int = 1,
    max_query_chars: int = 1500,
    evidence: Sequence[float] | None = None,
    style: str = "verbose",
) -> str:
    """The user message: candidates first, then the query, its cost estimates, the knob and the call
    limit; with ``evidence`` (shortlist mode) the query first, then the candidates with their
    per-query estimates (``style`` ``compact`` or ``dense``: ``compact_user_text``)."""
    check_style(style)
    if evidence is not None and len(evidence) != len(candidates):
        raise ValueError(f"evidence has {len(evidence)} estimates for {len(candidates)} candidates")
    if evidence is not None and style in HEADER_STYLES:
        return compact_user_text(query, candidates, knob, max_rounds, max_query_chars, evidence, style)
    tokens = query.tokens
    domain = f"{query.domain}, " if query.domain else ""
    query_line = f"Query ({domain}{tokens:.0f} tokens): {_cut(query.text.strip(), max_query_chars)}"
    if evidence is not None:
        lines = [query_line, evidence_block(candidates, evidence, tokens)]
    else:
        lines = [candidate_block(candidates), query_line, cost_line(candidates, tokens)]
    lines.append(f"Cost knob: {knob:g} score points per $ per 1k queries. Calls allowed: {max_rounds}.")
    return "\n".join(lines)


def messages(
    query: Query,
    candidates: Sequence[ModelDescriptor],
    knob: float,
    max_rounds: int = 1,
    max_query_chars: int = 1500,
    evidence: Sequence[float] | None = None,
    style: str = "verbose",
) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system_text(evidence is not None, style)},
        {"role": "user", "content": user_text(query, candidates, knob, max_rounds, max_query_chars, evidence, style)},
    ]


def attempt_positions(candidates: Sequence[ModelDescriptor], attempts: Sequence[Attempt]) -> list[int | None]:
    """0-based candidate position of each attempt's model (None when it is not a candidate)."""
    index = {c.id: k for k, c in enumerate(candidates)}
    return [index.get(a.model_id) for a in attempts]


def transcript(
    candidates: Sequence[ModelDescriptor], attempts: Sequence[Attempt], max_info_chars: int = 600, notes: Sequence[str] = ()
) -> str:
    """Earlier calls as ``<route>k</route><info>...</info>`` pairs (a call to a model outside the
    candidate list shows only its ``<info>`` block, numbered 0); ``notes[i]``, when given, ends
    attempt i's block (an answer judge's note)."""
    parts = []
    for i, (pos, attempt) in enumerate(zip(attempt_positions(candidates, attempts), attempts)):
        note = notes[i] if i < len(notes) else ""
        block = info_block(-1 if pos is None else pos, attempt.response, attempt.cost_usd, max_info_chars, note)
        parts.append(block if pos is None else format_route(pos) + block)
    return "".join(parts)


def render_prompt(
    tokenizer,
    query: Query,
    candidates: Sequence[ModelDescriptor],
    knob: float,
    attempts: Sequence[Attempt] = (),
    *,
    max_rounds: int = 1,
    max_query_chars: int = 1500,
    max_info_chars: int = 600,
    evidence: Sequence[float] | None = None,
    style: str = "verbose",
    notes: Sequence[str] = (),
) -> str:
    """The full prompt text: chat template with the generation prompt, then the transcript."""
    msgs = messages(query, candidates, knob, max_rounds, max_query_chars, evidence, style)
    head = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return head + transcript(candidates, attempts, max_info_chars, notes)


def split_prompt(tokenizer, candidates: Sequence[ModelDescriptor], text: str, evidence: bool = False, style: str = "verbose") -> int:
    """Character length of the cacheable prefix of a ``render_prompt`` text: everything up to and
    including the candidate block (system text, template tokens, candidates); with ``evidence``
    (shortlist mode, where the candidate block depends on the query) the system message only, and
    in the ``compact`` and ``dense`` styles the knob line after it (``header_line``)."""
    start = text.find("<|im_start|>user\n")
    if evidence:
        if start < 0:
            raise ValueError("prompt has no user message")
        end = start + len("<|im_start|>user\n")
        if style in HEADER_STYLES:
            line = text.find("\n", end)
            if line < 0:
                raise ValueError("prompt has no knob line")
            end = line + 1
        return end
    block = candidate_block(candidates)
    i = text.find(block, max(start, 0))
    if start < 0 or i < 0:
        raise ValueError("prompt has no candidate block")
    return i + len(block)


def cut_query_tokens(tokenizer, query: Query, max_tokens: int) -> Query:
    """``query`` with its text cut to a head + tail budget of ``max_tokens`` tokens (joined by
    `` ... ``); the token count shown in the prompt stays the original one. 0 = no cut."""
    if max_tokens <= 0:
        return query
    ids = encode(tokenizer, query.text.strip())
    if len(ids) <= max_tokens:
        return query
    head = max_tokens // 2
    text = tokenizer.decode(ids[:head]) + " ... " + tokenizer.decode(ids[len(ids) - (max_tokens - head) :])
    return replace(query, text=text, prompt_tokens=query.tokens)


def episode_prompt(tokenizer, spec, *, max_query_chars: int = 1500, style: str = "verbose") -> str:
    """The first-turn prompt of an environment episode (``routerl.env.EpisodeSpec``)."""
    return render_prompt(
        tokenizer, spec.query, spec.descriptors, spec.knob,
        max_rounds=spec.max_rounds, max_query_chars=max_query_chars, evidence=spec.evidence, style=style,
    )  # fmt: skip


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens added (the template already holds them)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]
