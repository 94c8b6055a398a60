"""``PolicyRouter``: the policy LM behind the ``Router`` interface, and ``load_policy_router``.

    router = load_policy_router(None)                 # shipped adapter, else the base model
    router = load_policy_router("runs/tiny/final")    # a training checkpoint (LoRA + config YAML)
    decision = router.decide(query, candidates, knob=0.1, attempts=[...])

A checkpoint directory holds a LoRA adapter (``adapter_config.json``) and ``routerl_config.yaml``,
the resolved training config: its ``model`` section names the base, its ``policy`` section the
decoding settings (mode, think budget, rounds). A plain HF model directory or a known base name
(``routerl.policy.loading.KNOWN_BASES``) works too, with default settings.

Decisions are deterministic (greedy decoding, no sampling). With ``attempts``, the policy may
accept the last answer or route to a candidate not yet called; once ``max_rounds`` calls were made,
or nobody is left to call, it accepts. ``ranking`` lists every candidate, best first, with the
probability the policy gives to routing there; the accepted model carries the accept probability;
candidates already called (other than the accepted one) get 0.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch

from routerl.descriptors.model import ModelDescriptor
from routerl.policy import prompt as P
from routerl.policy.decoding import act_on_turn, generate_turns, think_then_act
from routerl.policy.loading import DEFAULT_BASE, TinySpec, load_base, one_line_error
from routerl.policy.scoring import (
    ContextState, PrefixCache, action_options, branch_logprobs, common_prefix_len, distinguishing_prefixes,
    packed_logprobs_many,
)  # fmt: skip
from routerl.routers.base import Attempt, Decision, Query, RouteCall, Router
from routerl.routers.shortlist import Shortlist, check_order, display_order, evidence_estimates, select_shortlist
from routerl.yaml_numbers import read_yaml_file

log = logging.getLogger(__name__)

CONFIG_FILE = "routerl_config.yaml"
SERVING_EMBEDDINGS = 4096  # query embeddings a served policy keeps in memory (LRU)
EVIDENCE_FILE = "evidence.npz"  # shortlist mode: the evidence router's probe index (ids, embeddings)
ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets" / "policy"
MODES = ("think", "fast")
DTYPES = ("float32", "bfloat16", "int8")
ACTION_SCORING = ("full", "prefix")
ENGINES = ("hf", "fused")


@dataclass
class PolicyConfig:
    """How the policy renders prompts and decodes (shared by training rollouts and serving).

    Attributes:
        mode: ``think`` (generate a short reasoning, then act) or ``fast`` (score every action in
            one batched forward pass, no generation).
        think_budget: tokens the policy may think before its action is forced (think mode).
        action_tokens: tokens reserved after the think for the action tags.
        max_rounds: calls the policy may make for one request (1 = single call).
        max_query_chars: longer queries are cut in the middle to this many characters.
        max_info_chars: characters of an earlier answer shown in its ``<info>`` block.
        cache: fast mode: keep the KV state of the query-independent prompt prefix (system text +
            candidate block) in an LRU of ``cache_entries`` pools and run only the suffix per
            request; ``False`` runs the whole prompt every time (the reference path).
        cache_entries: bound of that LRU.
        turn_cache_entries: multi-round requests (fast mode, ``cache`` on): keep the state after
            each scored prompt that may get another turn (``max_rounds`` > 1) in an LRU of this
            many entries, so that the next turn, whose prompt extends it by the routed action and
            the answer, runs only those tokens (about 7 MB per entry for SmolLM2-135M in bfloat16
            with a 300-token prompt); 0 = off (every turn runs its whole prompt after the cached
            system message). An evaluation needs at least one entry per knob of its sweep.
        dtype: weights for serving: ``float32``, ``bfloat16`` or ``int8`` (dynamic int8
            quantization of the Linear layers, CPU only). Applied when the router is built.
        threads: OpenMP threads of the thread that runs the forward passes: set when the router is
            built (0 = leave as is) and, in the server, by ``start_worker`` in the batch worker
            thread (0 = every core).
        max_query_tokens: fast mode: cut the query to a head + tail budget of this many tokens
            (0 = no token cut; ``max_query_chars`` still applies).
        shortlist: 0, or show the policy only this many candidates, chosen by the router's
            evidence router and annotated with its per-query estimates (``routerl.routers.shortlist``;
            set from the checkpoint's ``env.shortlist``); only the system message is cached then.
        shortlist_order: display order of the shortlist (the checkpoint's ``env.shortlist_order``;
            ``random``, which shuffles in training only, is served cheapest first).
        prompt_style: shortlist mode's prompt text, ``verbose``, ``compact`` (the same numbers in
            about 90 tokens instead of 150 for a short query) or ``dense`` (fewer tokens per
            candidate line): ``routerl.policy.prompt``; must be the one trained on.
        action_scoring: fast mode: ``full`` scores each action's whole text; ``prefix`` scores it up
            to its first distinguishing token (``<route>3``, ``<accept``; ``distinguishing_prefixes``),
            leaving out the closing tags: fewer positions per request, slightly different numbers.
        escalate_below: fast mode, after an answer: 0 (default) takes the most probable action, as
            trained; a threshold in (0, 1] accepts the answer when the policy's accept probability
            is at least this and otherwise routes to its most probable other candidate (a
            calibration of the trained policy's accept/escalate decision, chosen on val prompts
            with ``python -m routerl.eval.accept_threshold``).
        engine: fast mode's cached scoring passes: ``hf`` (the ``transformers`` forward) or
            ``fused`` (``routerl.policy.fused``: the same numbers with fused projections, Llama
            models in float32 or bfloat16). The uncached path (``cache: false``) always runs ``hf``.
    """

    mode: str = "think"
    think_budget: int = 48
    action_tokens: int = 12
    max_rounds: int = 1
    max_query_chars: int = 1500
    max_info_chars: int = 600
    cache: bool = True
    cache_entries: int = 64
    turn_cache_entries: int = 32
    dtype: str = "float32"
    threads: int = 0
    max_query_tokens: int = 0
    shortlist: int = 0
    shortlist_order: str = "random"
    prompt_style: str = "verbose"
    action_scoring: str = "full"
    engine: str = "hf"
    escalate_below: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.cache, bool):
            raise ValueError(f"field 'cache': must be true or false, got {self.cache!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"field 'dtype': must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name, lo in (("cache_entries", 1), ("turn_cache_entries", 0), ("threads", 0), ("max_query_tokens", 0), ("shortlist", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"field '{name}': must be an integer >= {lo}, got {value!r}")
        check_order(self.shortlist_order)
        P.check_style(self.prompt_style)
        if self.action_scoring not in ACTION_SCORING:
            raise ValueError(f"field 'action_scoring': must be one of {', '.join(ACTION_SCORING)}, got {self.action_scoring!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"field 'engine': must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "fused" and self.dtype == "int8":
            raise ValueError("field 'engine': fused runs float32 or bfloat16 weights, not int8")
        if self.prompt_style != "verbose" and not self.shortlist:
            raise ValueError(f"field 'prompt_style': {self.prompt_style!r} needs shortlist mode (shortlist > 0)")
        if isinstance(self.escalate_below, bool) or not isinstance(self.escalate_below, (int, float)) or not 0.0 <= self.escalate_below <= 1.0:
            raise ValueError(f"field 'escalate_below': must be a number in [0, 1], got {self.escalate_below!r}")
        if self.escalate_below and self.mode != "fast":
            raise ValueError("field 'escalate_below': applies to fast mode only (think mode generates its action)")
        if self.mode not in MODES:
            raise ValueError(f"field 'mode': must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name, lo in (("think_budget", 0), ("action_tokens", 4), ("max_rounds", 1), ("max_query_chars", 32), ("max_info_chars", 16)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"field '{name}': must be an integer >= {lo}, got {value!r}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "PolicyConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


class PolicyRouter(Router):
    """The RL policy as a ``Router`` (see the module docstring)."""

    def __init__(self, model, tokenizer, config: PolicyConfig | None = None, name: str = "policy", evidence=None, judge=None):
        self.config = config or PolicyConfig()
        if self.config.shortlist and evidence is None:
            raise ValueError("field 'shortlist': shortlist mode needs an evidence router (a checkpoint with evidence.npz)")
        self.evidence = evidence
        self.judge = judge  # an AnswerJudge (answer_judge.json): its note ends each earlier answer's <info> block
        if self.config.threads:  # in-process use; the server's batch worker sets its own (start_worker)
            torch.set_num_threads(self.config.threads)
        self.model = _serving_dtype(model.eval(), self.config.dtype)
        self.scorer = self.model  # what runs the cached fast-mode passes
        if self.config.engine == "fused":
            from routerl.policy.fused import FusedLlama, supports

            if not supports(self.model):
                raise ValueError(f"field 'engine': fused needs a Llama model without biases, got {type(self.model).__name__}")
            self.scorer = FusedLlama(self.model)
        self.tokenizer = tokenizer
        self.prefix_cache = PrefixCache(self.config.cache_entries)
        self.turn_cache = PrefixCache(self.config.turn_cache_entries) if self.config.turn_cache_entries else None
        self._conts: dict[str, list[int]] = {}
        self._system_tokens: int | None = None
        self.name = name
        self.max_rounds = self.config.max_rounds

    def start_worker(self) -> None:
        """Run this router's forward passes from the calling thread (the server's batch worker):
        it gets ``threads`` (default: every core) OpenMP threads and the query embedder is loaded.
        OpenMP thread counts are per calling thread, and ``routerl serve`` loads in its main
        thread with one thread: with a second team of 2, libgomp's workers stop spinning between
        parallel regions (more managed threads than cores) and each of the ~1000 regions of a
        forward pays a wake-up (``python -m routerl.bench.variants --thread worker`` against
        ``--thread worker-two-teams``: p50 89-94 against 156 ms here). torch applies its last
        ``set_num_threads`` value to a thread at that thread's first parallel region, so this
        thread initialises itself first, then sets its own count."""
        torch.get_num_threads()  # torch's per-thread initialisation, now: later changes elsewhere leave this thread alone
        torch.set_num_threads(self.config.threads or compute_cores())
        load = getattr(getattr(self.evidence, "embedder", None), "load", None)
        if callable(load):  # the query embedder's model, here rather than on the first new query (~1 s)
            load()

    # -- prompt --------------------------------------------------------------------------------
    def prompt_ids(self, query: Query, candidates: Sequence[ModelDescriptor], knob: float, attempts: Sequence[Attempt] = (), evidence=None) -> list[int]:
        return P.encode(self.tokenizer, self.prompt_text(query, candidates, knob, attempts, evidence))

    def prompt_text(self, query: Query, candidates: Sequence[ModelDescriptor], knob: float, attempts: Sequence[Attempt] = (), evidence=None) -> str:
        """The prompt for these candidates (``evidence``: their per-query estimates, shortlist mode)."""
        c = self.config
        notes = self.judge_notes(query, candidates, knob, attempts, evidence)
        if c.mode == "fast" and c.max_query_tokens:
            query = P.cut_query_tokens(self.tokenizer, query, c.max_query_tokens)
        return P.render_prompt(
            self.tokenizer, query, candidates, knob, attempts,
            max_rounds=c.max_rounds, max_query_chars=c.max_query_chars, max_info_chars=c.max_info_chars, evidence=evidence,
            style=c.prompt_style, notes=notes,
        )  # fmt: skip

    def judge_notes(self, query: Query, candidates, knob: float, attempts: Sequence[Attempt], evidence) -> list[str]:
        """The answer judge's note after each attempt, on the attempts up to it (what the training
        episode showed after that call); none without a judge or estimates."""
        if self.judge is None or evidence is None or not attempts:
            return []
        positions = P.attempt_positions(candidates, attempts)
        costs = [c.estimate_cost_usd(query.tokens) for c in candidates]
        texts = [a.response for a in attempts]
        return [self.judge.note(evidence, costs, knob, positions[: i + 1], texts[: i + 1]) for i in range(len(attempts))]

    # -- deciding ------------------------------------------------------------------------------
    def _state(self, candidates, attempts):
        called = [p for p in P.attempt_positions(candidates, attempts) if p is not None]
        must_accept = bool(attempts) and (len(attempts) >= self.max_rounds or len(set(called)) >= len(candidates))
        return called, must_accept

    def shortlist(self, query: Query, candidates: Sequence[ModelDescriptor], knob: float, attempts: Sequence[Attempt] = ()) -> Shortlist:
        """Shortlist mode: the candidates the policy is shown (models already called included)."""
        return self._shortlist(*evidence_estimates(self.evidence, query, candidates), candidates, knob, attempts)

    def _shortlist(self, est, cost, candidates, knob, attempts) -> Shortlist:
        called = [p for p in P.attempt_positions(candidates, attempts) if p is not None]
        order = display_order(self.config.shortlist_order, training=False)
        return select_shortlist(est, cost, knob, self.config.shortlist, include=called, order=order)

    def decide(self, query: Query, candidates: Sequence[ModelDescriptor], knob: float, attempts: Sequence[Attempt] = ()) -> Decision:
        if not candidates:
            raise ValueError("no candidates to route to")
        shown, estimates, rest = self.view(query, candidates, knob, attempts)
        return _with_rest(self._decide(query, shown, knob, attempts, estimates), rest)

    def view(self, query, candidates, knob, attempts) -> tuple[list[ModelDescriptor], tuple[float, ...] | None, list[str]]:
        """What the policy is shown: ``(candidates, their per-query estimates, the ids of the rest)``.
        Shortlist mode estimates every candidate once per request; the rest (not shown) follow the
        shortlist in the fallback order, by the evidence. Otherwise: every candidate, no estimates."""
        if not self.config.shortlist:
            return list(candidates), None, []
        est, cost = evidence_estimates(self.evidence, query, candidates)
        short = self._shortlist(est, cost, candidates, knob, attempts)
        shown = short.candidates(candidates)
        ids = {c.id for c in shown}
        rest = select_shortlist(est, cost, knob, len(candidates), order="value").positions
        return shown, short.estimates, [candidates[p].id for p in rest if candidates[p].id not in ids]

    def _decide(self, query, candidates, knob, attempts=(), evidence=None) -> Decision:
        called, must_accept = self._state(candidates, attempts)
        if must_accept:
            kept = attempts[-1].model_id
            ranking = [(kept, 1.0)] + [(c.id, 0.0) for c in candidates if c.id != kept]
            return Decision("accept", kept, ranking, router=self.name)
        allow_accept = bool(attempts)
        if self.config.mode == "fast":
            options = action_options(len(candidates), called, allow_accept)
            if self.config.cache:
                probs = self.fast_probs(query, candidates, knob, attempts, options, evidence)
            else:
                probs = self._fast(self.prompt_ids(query, candidates, knob, attempts, evidence), [()], options)[0]
            return self._fast_decision(query, candidates, attempts, options, probs)
        ids = self.prompt_ids(query, candidates, knob, attempts, evidence)
        turn = think_then_act(
            self.model, self.tokenizer, ids, len(candidates), called=called, allow_accept=allow_accept,
            think_budget=self.config.think_budget, action_tokens=self.config.action_tokens,
        )  # fmt: skip
        if turn.fallback or turn.forced:
            log.debug("policy turn malformed (%s); %s", turn.error, "forced the action" if turn.forced else "fast-mode fallback")
        return self._decision(query, candidates, attempts, turn.options, turn.probs, turn.action.kind, turn.action.index, turn.think)

    def decide_many(self, query, candidates, knobs, attempts=()):
        """In fast mode, every knob is scored in one batched pass over the shared prompt prefix
        (shortlist mode: one decision per knob, as each knob has its own shortlist)."""
        if self.config.mode != "fast" or len(knobs) < 2 or self.config.shortlist:
            return [self.decide(query, candidates, k, attempts) for k in knobs]
        if not candidates:
            raise ValueError("no candidates to route to")
        called, must_accept = self._state(candidates, attempts)
        if must_accept:
            return [self.decide(query, candidates, k, attempts) for k in knobs]
        prompts = [self.prompt_ids(query, candidates, k, attempts) for k in knobs]
        shared = common_prefix_len(prompts)
        shared = min(shared, min(len(p) for p in prompts) - 1)
        options = action_options(len(candidates), called, bool(attempts))
        all_probs = self._fast(prompts[0][:shared], [p[shared:] for p in prompts], options)
        return [self._fast_decision(query, candidates, attempts, options, probs) for probs in all_probs]

    def decide_batch(self, calls: Sequence[RouteCall]) -> list[Decision]:
        """Decide many requests together (the server's micro-batching): think mode generates every
        turn in one batched ``generate``; fast mode scores every request whose prompt starts with
        the same cached prefix in one forward pass (``packed_logprobs_many``)."""
        if self.config.mode == "fast":
            return self._fast_batch(calls)
        if self.config.shortlist:
            return [self.decide(c.query, c.candidates, c.knob, c.attempts) for c in calls]
        out: list[Decision | None] = [None] * len(calls)
        todo = []
        for i, c in enumerate(calls):
            if not c.candidates:
                raise ValueError("no candidates to route to")
            called, must_accept = self._state(c.candidates, c.attempts)
            if must_accept:
                out[i] = self.decide(c.query, c.candidates, c.knob, c.attempts)
            else:
                todo.append((i, called, self.prompt_ids(c.query, c.candidates, c.knob, c.attempts)))
        if todo:
            budget = self.config.think_budget + self.config.action_tokens
            turns = generate_turns(self.model, self.tokenizer, [ids for _, _, ids in todo], budget)
            for (i, called, ids), new_ids in zip(todo, turns):
                c = calls[i]
                turn = act_on_turn(self.model, self.tokenizer, ids, new_ids, len(c.candidates), called=called, allow_accept=bool(c.attempts))
                out[i] = self._decision(
                    c.query, c.candidates, c.attempts, turn.options, turn.probs, turn.action.kind, turn.action.index, turn.think
                )
        return out

    def _fast_batch(self, calls: Sequence[RouteCall]) -> list[Decision]:
        out: list[Decision | None] = [None] * len(calls)
        prepare = getattr(self.evidence, "prepare", None)
        if self.config.shortlist and len(calls) > 1 and callable(prepare):
            prepare([c.query for c in calls])  # one embedding batch; each request then hits the embedder's cache
        groups: dict[tuple[int, ...], list] = {}  # cached prefix ids -> the calls that share it
        for i, c in enumerate(calls):
            if not c.candidates:
                raise ValueError("no candidates to route to")
            shown, estimates, rest = self.view(c.query, c.candidates, c.knob, c.attempts)
            called, must_accept = self._state(shown, c.attempts)
            if must_accept or not self.config.cache:
                out[i] = _with_rest(self._decide(c.query, shown, c.knob, c.attempts, estimates), rest)
                continue
            options = action_options(len(shown), called, bool(c.attempts))
            head, suffix = self.split_ids(c.query, shown, c.knob, c.attempts, estimates)
            start, tail = self._turn_start(c.query, shown, c.knob, c.attempts, estimates, head, suffix)
            base = self._base_len(head)
            member = _Pending(i, c, shown, rest, options, head, suffix, start, tail, self._keeps_turn(c.attempts))
            groups.setdefault(tuple(head[:base] if base else head), []).append(member)
        for key, members in groups.items():
            heads = {tuple(m.head) for m in members}
            items = [(m.tail, self._conts_of(m.options)) for m in members]
            states = None
            if len(heads) == 1 and all(m.start is None for m in members):  # one knob line (or none): run after its cached state
                state = self._prefix_state(list(heads.pop())) if key else None
            else:  # each row continues its own state (its knob line or its previous turn) after the shared system message
                state = self.prefix_cache.get(self.scorer, list(key)) if key else None
                states = [m.start if m.start is not None else (self._prefix_state(m.head) if m.head else None) for m in members]
            kept = [] if any(m.keeps for m in members) else None
            scored = packed_logprobs_many(self.scorer, state, items, states, relative=True, kept=kept)
            for n, (m, logp) in enumerate(zip(members, scored)):
                c = m.call
                out[m.index] = _with_rest(self._fast_decision(c.query, m.shown, c.attempts, m.options, torch.softmax(logp, dim=-1)), m.rest)
                if m.keeps and kept[n] is not None:
                    self.turn_cache.put(m.head + m.suffix, kept[n])
        return out

    def request_tokens(self, query: Query, candidates: Sequence[ModelDescriptor], knob: float, attempts: Sequence[Attempt] = ()) -> tuple[int, int]:
        """``(cached prefix tokens, tokens run per request)`` of the prompt ``decide`` renders
        (before the action positions)."""
        shown, estimates, _ = self.view(query, candidates, knob, attempts)
        head, suffix = self.split_ids(query, shown, knob, attempts, estimates)
        return len(head), len(suffix)

    def split_ids(self, query, candidates, knob, attempts, evidence=None) -> tuple[list[int], list[int]]:
        """``(cached prefix ids, the rest)`` of ``prompt_ids``: the prefix is the query-independent
        head (``P.split_prompt``; shortlist mode: the system message, plus the knob line in the
        ``compact`` and ``dense`` styles), or empty when the tokenizer merged tokens across the
        boundary (that prompt then runs uncached)."""
        text = self.prompt_text(query, candidates, knob, attempts, evidence)
        ids = P.encode(self.tokenizer, text)
        head = P.encode(self.tokenizer, text[: P.split_prompt(self.tokenizer, candidates, text, evidence is not None, self.config.prompt_style)])
        if 0 < len(head) < len(ids) and ids[: len(head)] == head:
            return head, ids[len(head) :]
        return [], ids

    def _prefix_state(self, head: Sequence[int]):
        """The cached state after ``head``. A miss on a prefix that ends with the knob line (a knob
        not seen yet) runs only that line after the cached system message (``PrefixCache.get``'s
        ``base``)."""
        return self.prefix_cache.get(self.scorer, head, base=self._base_len(head))

    def _base_len(self, head: Sequence[int]) -> int:
        """Tokens of ``head`` before its knob line (0: it has none)."""
        base = self._system_len() if self.config.shortlist and self.config.prompt_style in P.HEADER_STYLES else 0
        return base if 0 < base < len(head) else 0

    def _system_len(self) -> int:
        """Tokens of the system message and the user header (``<|im_start|>user\\n``), which every
        shortlist prompt starts with."""
        if self._system_tokens is None:
            text = P.render_prompt(self.tokenizer, Query(text="x"), [], 0.0, evidence=[], style=self.config.prompt_style)
            self._system_tokens = len(P.encode(self.tokenizer, text[: P.split_prompt(self.tokenizer, [], text, evidence=True)]))
        return self._system_tokens

    def fast_probs(self, query, candidates, knob, attempts, options, evidence=None) -> torch.Tensor:
        """Fast-mode probabilities over ``options`` with the prefix cache: the prompt's tokens are
        exactly ``prompt_ids``; the cached prefix is used only when its tokens are a prefix of them.
        After the cached prefix, one forward pass runs the suffix and every action (``packed_logprobs``).
        In shortlist mode (``evidence``) the cached prefix is the system message. A later turn of
        a multi-round request starts after its previous turn's kept state instead (the turn cache,
        ``turn_cache_entries``)."""
        head, suffix = self.split_ids(query, candidates, knob, attempts, evidence)
        start, tail = self._turn_start(query, candidates, knob, attempts, evidence, head, suffix)
        state = start if start is not None else (self._prefix_state(head) if head else None)
        kept = [] if self._keeps_turn(attempts) else None
        logp = packed_logprobs_many(self.scorer, state, [(tail, self._conts_of(options))], relative=True, kept=kept)[0]
        if kept and kept[0] is not None:
            self.turn_cache.put(head + suffix, kept[0])
        return torch.softmax(logp, dim=-1)

    def _turn_start(self, query, candidates, knob, attempts, evidence, head: list[int], suffix: list[int]) -> tuple[ContextState | None, list[int]]:
        """``(state, ids to run after it)`` for the prompt ``head + suffix``: the turn cache's state
        after this request's previous turn (its prompt is this one without the last attempt,
        re-rendered; a hit needs its exact tokens, so a different shortlist, knob or query misses)
        and the ids after it; else ``(None, suffix)``, to run after the cached ``head``."""
        if self.turn_cache is None or not attempts or not len(self.turn_cache):
            return None, suffix
        ids = head + suffix
        prev = self.prompt_ids(query, candidates, knob, attempts[:-1], evidence)
        if len(prev) >= len(ids) or ids[: len(prev)] != prev:
            return None, suffix
        state = self.turn_cache.lookup(prev)
        return (state, ids[len(prev) :]) if state is not None else (None, suffix)

    def _keeps_turn(self, attempts: Sequence[Attempt]) -> bool:
        """Whether a prompt with these attempts may get another turn, whose prompt extends it."""
        return self.turn_cache is not None and len(attempts) + 1 < self.max_rounds

    def _conts_of(self, options) -> list[list[int]]:
        """The token ids scored for each option (``action_scoring``)."""
        conts = [self._cont(o.text) for o in options]
        return distinguishing_prefixes(conts) if self.config.action_scoring == "prefix" else conts

    def _cont(self, text: str) -> list[int]:
        ids = self._conts.get(text)
        if ids is None:
            ids = self._conts[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def _fast(self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]], options) -> list[torch.Tensor]:
        """Probabilities over ``options`` for each context ``prefix + suffix``: ``len(suffixes)`` rows."""
        conts = self._conts_of(options)
        branches = [(s, c) for s in suffixes for c in conts]
        logp = branch_logprobs(self.model, prefix, branches, self.tokenizer.pad_token_id).view(len(suffixes), len(options))
        return list(torch.softmax(logp, dim=-1))

    def _fast_decision(self, query, candidates, attempts, options, probs) -> Decision:
        """Fast mode: the most probable option; with ``escalate_below`` and an accept option, route
        to the most probable other option when accepting is less probable than that."""
        best = options[int(torch.argmax(probs))]
        below = self.config.escalate_below
        accept = [k for k, o in enumerate(options) if o.is_accept]
        if below > 0 and accept and len(options) > 1:
            p_accept = float(probs[accept[0]])
            routes = [k for k in range(len(options)) if k != accept[0]]
            best = options[max(routes, key=lambda k: float(probs[k]))] if p_accept < below else options[accept[0]]
        return self._decision(query, candidates, attempts, options, probs, "accept" if best.is_accept else "route", best.index, "")

    def _decision(self, query, candidates, attempts, options, probs, kind, index, think) -> Decision:
        p = {o.index: float(x) for o, x in zip(options, probs)}
        ranking = {c.id: p.get(k, 0.0) for k, c in enumerate(candidates)}
        if attempts and None in p:
            ranking[attempts[-1].model_id] = p[None]
        order = sorted(ranking.items(), key=lambda kv: -kv[1])
        if kind == "accept":
            return Decision("accept", attempts[-1].model_id, order, think=think, router=self.name)
        chosen = candidates[index]
        return Decision(
            "route", chosen.id, order, think=think, est_cost_usd=float(chosen.estimate_cost_usd(query.tokens)), router=self.name
        )


class _Pending(NamedTuple):
    """A fast-mode request of a micro-batch, ready to score: its position in the batch, the call,
    what it is shown (``view``), its options, its prompt as cached ``head`` + ``suffix``, and the
    turn cache's ``start`` state with the ``tail`` to run after it (``_turn_start``); ``keeps``:
    whether to keep its state for a next turn (``_keeps_turn``)."""

    index: int
    call: RouteCall
    shown: list
    rest: list
    options: list
    head: list[int]
    suffix: list[int]
    start: ContextState | None
    tail: list[int]
    keeps: bool


def compute_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _with_rest(decision: Decision, rest: Sequence[str]) -> Decision:
    """Shortlist mode: the candidates not shown follow the policy's ranking (probability 0)."""
    if rest:
        decision.ranking = list(decision.ranking) + [(m, 0.0) for m in rest]
    return decision


def _serving_dtype(model, dtype: str):
    if dtype == "bfloat16":
        return model.to(torch.bfloat16)
    if dtype == "int8":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The resolved training config saved beside an adapter (empty when absent)."""
    f = Path(path) / CONFIG_FILE
    if not f.exists():
        return {}
    raw = read_yaml_file(f, "checkpoint config") or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{f}: expected a mapping")
    return raw


def policy_config_from(raw: dict[str, Any]) -> PolicyConfig:
    """The ``PolicyConfig`` a checkpoint config describes: its ``policy`` section, with the
    shortlist settings of its ``env`` section."""
    env = raw.get("env") or {}
    return PolicyConfig.from_dict({
        **(raw.get("policy") or {}),
        "shortlist": int(env.get("shortlist") or 0),
        "shortlist_order": env.get("shortlist_order", "random"),
    })  # fmt: skip


def policy_source(path_or_name: str | Path | None) -> str | Path:
    """What ``None`` means: the shipped adapter under ``routerl/assets/policy/`` if present, else the base."""
    if path_or_name is None:
        return ASSETS_DIR if (ASSETS_DIR / "adapter_config.json").exists() else DEFAULT_BASE
    return path_or_name


def load_policy_model(path_or_name: str | Path | None = None):
    """``(model, tokenizer, PolicyConfig)`` for an adapter directory, a model directory or a base
    name; None = ``policy_source(None)``."""
    path_or_name = policy_source(path_or_name)
    path = Path(path_or_name)
    raw = read_checkpoint_config(path) if path.is_dir() else {}
    model_cfg = raw.get("model") or {}
    policy_cfg = policy_config_from(raw)
    if path.is_dir() and (path / "adapter_config.json").exists():
        from peft import PeftModel

        base = model_cfg.get("base")
        if not base:
            import json

            base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        tiny = TinySpec(**(model_cfg.get("tiny") or {}))
        tok_dir = str(path) if (path / "tokenizer.json").exists() else None
        model, tokenizer = load_base(base, tiny=tiny, dtype=model_cfg.get("dtype", "float32"), tokenizer_dir=tok_dir)
        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
        return model, tokenizer, policy_cfg
    model, tokenizer = load_base(str(path_or_name))
    return model, tokenizer, policy_cfg


def load_evidence(path: str | Path):
    """Shortlist mode: the evidence router saved with a checkpoint (``evidence.npz`` + the config's
    ``env.evidence``); None when the checkpoint (or a base model name) has none."""
    path = Path(path)
    if not (path / EVIDENCE_FILE).exists():
        return None
    from routerl.data.embeddings import MiniLMEmbedder, get_embedder
    from routerl.routers.knn_probe import KnnProbeRouter
    from routerl.routers.probe_index import ProbeIndex

    ev = (read_checkpoint_config(path).get("env") or {}).get("evidence") or {}
    router = ev.get("router", "knn-probe")
    if router not in ("knn-probe", "learned"):
        raise ValueError(f"{path}: evidence router {router!r} cannot be rebuilt (knn-probe or learned)")
    name = ev.get("embedder", "minilm")
    # Serving: queries are embedded with a bounded in-memory cache and never written to disk.
    embedder = MiniLMEmbedder(persist=False, memory_entries=SERVING_EMBEDDINGS) if name == "minilm" else get_embedder(name)
    index = ProbeIndex.load(path / EVIDENCE_FILE)
    if router == "learned":
        from routerl.routers.learned_evidence import LEARNED_FILE, load_learned

        if not (path / LEARNED_FILE).exists():
            raise ValueError(f"{path}: the config names the learned evidence router but {LEARNED_FILE} is missing")
        return load_learned(path / LEARNED_FILE, index, embedder)
    options = {k: v for k, v in (ev.get("options") or {}).items() if k in ("k", "prior_weight")}
    return KnnProbeRouter(index, embedder, **options)


def resolved_policy_config(path_or_none: str | Path | None = None, **overrides: Any) -> PolicyConfig:
    """The ``PolicyConfig`` ``load_policy_router(path_or_none, **overrides)`` serves with, read from
    the checkpoint's config without loading its model; an unknown or invalid option raises
    ``ValueError`` naming the field."""
    known = {f.name for f in fields(PolicyConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown policy option {unknown[0]!r} (known: {', '.join(sorted(known))})")
    path = Path(policy_source(path_or_none))
    config = policy_config_from(read_checkpoint_config(path) if path.is_dir() else {})
    return PolicyConfig(**{**config.__dict__, **overrides}) if overrides else config


def check_checkpoint(source: str | Path) -> None:
    """For a directory: ``ValueError`` naming what is missing unless it is a policy checkpoint (an
    adapter with its weights and ``routerl_config.yaml``) or a model directory (``config.json``).
    A base model name passes (``load_base`` knows the names)."""
    path = Path(source)
    if not path.is_dir():
        if path.exists():
            raise ValueError(f"{source}: a file, not a checkpoint directory")
        if "/" in str(source):
            raise ValueError(f"{source}: no such checkpoint directory")
        return
    if (path / "adapter_config.json").exists():
        missing = [n for n in ("adapter_model.safetensors", CONFIG_FILE) if not (path / n).exists()]
        if missing:
            raise ValueError(f"{path}: not a complete policy checkpoint (missing {', '.join(missing)})")
        raw = read_checkpoint_config(path)
        for section in ("model", "policy", "env"):
            if raw.get(section) is not None and not isinstance(raw[section], dict):
                raise ValueError(f"{path / CONFIG_FILE}: field '{section}' must be a mapping, got {raw[section]!r}")
    elif not (path / "config.json").exists():
        raise ValueError(f"{path}: not a policy checkpoint (no adapter_config.json) nor a model directory (no config.json)")


def load_policy_router(path_or_none: str | Path | None = None, **overrides: Any) -> PolicyRouter:
    """A ``PolicyRouter`` from a checkpoint, a model directory or a base name (see the module docstring).
    ``overrides`` replace ``PolicyConfig`` fields (e.g. ``mode="fast"``)."""
    source = policy_source(path_or_none)
    check_checkpoint(source)
    try:
        config = resolved_policy_config(path_or_none, **overrides)  # a bad option fails before the model loads
        model, tokenizer, _ = load_policy_model(source)
        evidence = load_evidence(source) if config.shortlist else None
        judge = load_judge(source) if evidence is not None else None
    except Exception as exc:  # a damaged file raises its library's own error (safetensors, zipfile, ...)
        if isinstance(exc, ValueError) and str(source) in str(exc):
            raise
        raise ValueError(f"{source}: cannot load the policy ({one_line_error(exc)})") from exc
    name = "policy" if path_or_none is None else f"policy:{Path(str(path_or_none)).name}"
    return PolicyRouter(model, tokenizer, config, name=name, evidence=evidence, judge=judge)


def load_judge(path: str | Path):
    """The answer judge saved with a checkpoint (``answer_judge.json``), or None. A checkpoint
    whose config asks for one (``env.answer_judge``) but lacks the file is refused."""
    from routerl.routers.cascade import JUDGE_FILE, AnswerJudge

    path = Path(path)
    if (path / JUDGE_FILE).exists():
        return AnswerJudge.load(path / JUDGE_FILE)
    if path.is_dir() and (read_checkpoint_config(path).get("env") or {}).get("answer_judge"):
        raise ValueError(f"{path}: the config sets env.answer_judge but {JUDGE_FILE} is missing")
    return None
