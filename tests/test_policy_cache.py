"""Fast-mode serving path: prefix KV cache and shared-prefix action scoring equal the reference path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from routerl.env import EnvConfig, RoutingEnv
from routerl.policy.loading import TinySpec, load_base
from routerl.policy.router import PolicyConfig, PolicyRouter
from routerl.policy.scoring import PrefixCache, action_options, branch_logprobs, option_logprobs, run_context
from routerl.routers.base import Attempt, Query


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_base("tiny", tiny=TinySpec(seed=7))


@pytest.fixture(scope="module")
def specs(synthetic_world):
    table, splits, _ = synthetic_world
    env = RoutingEnv(table, splits, EnvConfig(min_pool=3, max_pool=6, max_rounds=2))
    rng = np.random.default_rng(3)
    return [env.sample_episode(rng).spec for _ in range(6)]


def _probs(router, spec, knob, attempts=()):
    d = router.decide(spec.query, spec.descriptors, knob, attempts)
    return dict(d.ranking), d


def test_option_logprobs_equal_branch_logprobs(tiny, specs):
    model, tok = tiny
    spec = specs[0]
    ref = PolicyRouter(model, tok, PolicyConfig(mode="fast", cache=False))
    ids = ref.prompt_ids(spec.query, spec.descriptors, 0.1)
    options = action_options(len(spec.descriptors), called=[1], allow_accept=True)
    conts = [tok(o.text, add_special_tokens=False)["input_ids"] for o in options]
    want = branch_logprobs(model, ids, [((), c) for c in conts], tok.pad_token_id)
    got = option_logprobs(model, run_context(model, ids), conts, tok.pad_token_id)
    assert torch.allclose(want, got, atol=1e-4)
    split = run_context(model, ids[20:], run_context(model, ids[:20]))  # the same state in two pieces
    assert torch.allclose(want, option_logprobs(model, split, conts, tok.pad_token_id), atol=1e-4)


def test_cached_and_uncached_decisions_agree(tiny, specs):
    model, tok = tiny
    cached = PolicyRouter(model, tok, PolicyConfig(mode="fast", max_rounds=2))
    plain = PolicyRouter(model, tok, PolicyConfig(mode="fast", max_rounds=2, cache=False))
    for i, spec in enumerate(specs):  # a new pool each time -> a new cache entry
        for knob in (0.0, 0.5):
            attempts = [Attempt(spec.descriptors[0].id, "The answer is 4.", 0.001)] if knob else []
            a, da = _probs(cached, spec, knob, attempts)
            b, db = _probs(plain, spec, knob, attempts)
            assert da.model_id == db.model_id and da.action == db.action
            assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a)
            # the prompt tokens are the same on both paths
            assert cached.prompt_ids(spec.query, spec.descriptors, knob, attempts) == plain.prompt_ids(spec.query, spec.descriptors, knob, attempts)
    assert len(cached.prefix_cache) == len({tuple(c.id for c in s.descriptors) for s in specs})
    assert cached.prefix_cache.hits >= len(specs)  # second knob of each pool reused its prefix
    # a registry change (new descriptor values for the same ids) gives a new entry, and fresh numbers
    spec = specs[0]
    changed = [spec.descriptors[0].with_changes(input_price_per_mtok=spec.descriptors[0].input_price_per_mtok + 7.0)] + list(spec.descriptors[1:])
    before = len(cached.prefix_cache)
    a, _ = _probs(cached, _Spec(spec.query, changed), 0.1)
    b, _ = _probs(plain, _Spec(spec.query, changed), 0.1)
    assert len(cached.prefix_cache) == before + 1 and all(abs(a[k] - b[k]) < 1e-4 for k in a)


class _Spec:
    def __init__(self, query, descriptors):
        self.query, self.descriptors = query, descriptors


def test_prefix_cache_is_bounded_lru(tiny):
    model, _ = tiny
    cache = PrefixCache(max_entries=2)
    for ids in ([5, 6, 7], [5, 6, 8], [5, 6, 7], [9, 9]):
        cache.get(model, ids)
    assert len(cache) == 2 and cache.hits == 1 and cache.misses == 3
    assert PrefixCache.key([5, 6, 8]) not in cache._items  # least recently used went first
    with pytest.raises(ValueError):
        PrefixCache(0)


def test_prefix_cache_extends_a_cached_base(tiny):
    """``base``: a miss runs only the ids after the base prefix, on the base's cached state, and
    gives the state a full run gives."""
    model, _ = tiny
    cache = PrefixCache(max_entries=8)
    ids = [5, 6, 7, 8, 9]
    state = cache.get(model, ids, base=3)
    assert cache.misses == 2 and PrefixCache.key(ids[:3]) in cache._items  # the base was cached on the way
    full = run_context(model, ids)
    assert state.length == full.length == 5 and torch.allclose(state.last, full.last, atol=1e-5)
    cache.get(model, [5, 6, 7, 1, 2], base=3)
    assert cache.hits == 1 and cache.misses == 3  # the base was a hit


def test_cached_state_is_not_mutated(tiny, specs):
    model, tok = tiny
    router = PolicyRouter(model, tok, PolicyConfig(mode="fast"))
    spec = specs[1]
    first, _ = _probs(router, spec, 0.2)
    _probs(router, spec, 1.0)
    again, _ = _probs(router, spec, 0.2)
    assert first == again


def test_serving_options(tiny, specs):
    model, tok = tiny
    spec = specs[2]
    long = Query("word " * 400, domain=spec.query.domain)
    r = PolicyRouter(model, tok, PolicyConfig(mode="fast", max_query_tokens=16))
    assert len(r.prompt_ids(long, spec.descriptors, 0.1)) < len(PolicyRouter(model, tok, PolicyConfig(mode="fast")).prompt_ids(long, spec.descriptors, 0.1))
    r.decide(long, spec.descriptors, 0.1)
    for bad in ({"dtype": "fp8"}, {"cache": "yes"}, {"threads": -1}, {"max_query_tokens": -2}, {"cache_entries": 0}):
        with pytest.raises(ValueError):
            PolicyConfig(mode="fast", **bad)


def test_packed_logprobs_equal_branch_logprobs(tiny, specs):
    """One packed pass (suffix + trie of the actions) gives the reference numbers, cached or not."""
    from routerl.policy.scoring import packed_logprobs

    model, tok = tiny
    spec = specs[3]
    ids = PolicyRouter(model, tok, PolicyConfig(mode="fast", cache=False)).prompt_ids(spec.query, spec.descriptors, 0.3)
    options = action_options(len(spec.descriptors), called=[0], allow_accept=True)
    conts = [tok(o.text, add_special_tokens=False)["input_ids"] for o in options]
    want = branch_logprobs(model, ids, [((), c) for c in conts], tok.pad_token_id)
    assert torch.allclose(want, packed_logprobs(model, None, ids, conts), atol=1e-4)
    assert torch.allclose(want, packed_logprobs(model, run_context(model, ids[:30]), ids[30:], conts), atol=1e-4)
    assert torch.allclose(want, packed_logprobs(model, run_context(model, ids), [], conts), atol=1e-4)


def test_distinguishing_prefixes_cut_each_action_after_its_first_distinct_token():
    from routerl.policy.scoring import distinguishing_prefixes

    route = lambda k: [60, 61, 62, *k, 63, 61, 62]  # noqa: E731  <, route, >, digits, </, route, >
    accept = [60, 64, 65]  # <, accept, />
    conts = [route([1]), route([2]), route([1, 0]), accept]
    assert distinguishing_prefixes(conts) == [[60, 61, 62, 1, 63], [60, 61, 62, 2], [60, 61, 62, 1, 0], [60, 64]]
    assert distinguishing_prefixes([route([1])]) == [[60]]  # alone: its first token decides


def test_prefix_action_scoring_is_cached_like_the_reference_and_covers_the_same_actions(tiny, specs):
    model, tok = tiny
    cached = PolicyRouter(model, tok, PolicyConfig(mode="fast", max_rounds=2, action_scoring="prefix"))
    plain = PolicyRouter(model, tok, PolicyConfig(mode="fast", max_rounds=2, action_scoring="prefix", cache=False))
    full = PolicyRouter(model, tok, PolicyConfig(mode="fast", max_rounds=2))
    for spec in specs:
        attempts = [Attempt(spec.descriptors[0].id, "The answer is 12.", 0.002)]
        for att in ((), attempts):
            a, da = _probs(cached, spec, 0.1, att)
            b, db = _probs(plain, spec, 0.1, att)
            assert (da.action, da.model_id) == (db.action, db.model_id)
            assert max(abs(a[m] - b[m]) for m in a) < 1e-4
            assert sum(a.values()) == pytest.approx(1.0, abs=1e-5)
            assert a.keys() == _probs(full, spec, 0.1, att)[0].keys()
    with pytest.raises(ValueError, match="action_scoring"):
        PolicyConfig(action_scoring="greedy")


def test_padded_batch_equals_each_item_alone(tiny, specs):
    from routerl.policy.scoring import packed_logprobs, packed_logprobs_many, padded_logprobs_many

    model, tok = tiny
    router = PolicyRouter(model, tok, PolicyConfig(mode="fast", max_rounds=2))
    head = router.prompt_ids(specs[0].query, specs[0].descriptors, 0.1)[:20]
    state = run_context(model, head)
    items = []
    for i, spec in enumerate(specs[:4]):
        suffix = router.prompt_ids(spec.query, spec.descriptors, 0.1 * i)[20 : 40 + 7 * i]  # different lengths
        options = action_options(len(spec.descriptors), called=[0] if i % 2 else [], allow_accept=bool(i % 2))
        items.append((suffix, [router._cont(o.text) for o in options]))
    items.append(([], items[0][1]))  # nothing after the context: scored from its last position
    alone = [packed_logprobs(model, state, s, c) for s, c in items]
    for batch in (padded_logprobs_many(model, state, items), packed_logprobs_many(model, state, items)):
        assert [b.shape for b in batch] == [a.shape for a in alone]
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(alone, batch))


def test_kept_state_continues_like_a_fresh_run(tiny):
    """``kept``: the state after context + suffix, taken from the scoring pass (one item, or a row
    of a padded batch whose rows continue their own states), scores a continuation as running the
    whole context from scratch does."""
    from routerl.policy.scoring import packed_logprobs_many

    model, _ = tiny
    system = run_context(model, [3, 4, 5, 6])
    knob_lines = [run_context(model, [7, 8], system), run_context(model, [9], system)]
    suffixes = [[10, 11, 12], [13, 14]]
    conts = [[20, 21], [20, 22], [23]]
    for states in (None, knob_lines):  # one item alone (per state), then a padded batch of two
        kept: list = []
        if states is None:
            packed_logprobs_many(model, system, [(suffixes[0], conts)], kept=kept)
            contexts = [[3, 4, 5, 6] + suffixes[0]]
        else:
            packed_logprobs_many(model, system, [(s, conts) for s in suffixes], states=states, kept=kept)
            contexts = [[3, 4, 5, 6, 7, 8] + suffixes[0], [3, 4, 5, 6, 9] + suffixes[1]]
        assert [k.length for k in kept] == [len(c) for c in contexts] and all(k.last is None for k in kept)
        for state, context in zip(kept, contexts):
            turn = [30, 31, 32]  # the next turn's tokens
            got = packed_logprobs_many(model, state, [(turn, conts)])[0]
            want = branch_logprobs(model, context + turn, [((), c) for c in conts], 0)
            assert torch.allclose(got, want, atol=1e-4)
    assert packed_logprobs_many(model, system, [([], conts)], kept=(kept := []))[0].shape == (3,) and kept == [None]


@pytest.mark.parametrize("engine", ["hf", "fused"])
def test_turn_cache_runs_only_the_new_turn_with_the_same_numbers(tiny, specs, engine):
    """A second-round decision continues the first round's kept state (a turn-cache hit) and
    equals the decision of a router without the turn cache, one by one and in a micro-batch."""
    from routerl.routers.base import RouteCall

    model, tok = tiny
    turns = PolicyRouter(model, tok, PolicyConfig(mode="fast", max_rounds=2, engine=engine))
    plain = PolicyRouter(model, tok, PolicyConfig(mode="fast", max_rounds=2, turn_cache_entries=0))
    calls = []
    for spec in specs[:3]:
        first = turns.decide(spec.query, spec.descriptors, 0.1)
        calls.append(RouteCall(spec.query, spec.descriptors, 0.1, [Attempt(first.model_id, "The answer is 4.", 0.001)]))
    assert len(turns.turn_cache) == 3 and plain.turn_cache is None
    turns.scorer = counting = _CountingScorer(turns.scorer)
    one = [turns.decide(c.query, c.candidates, c.knob, c.attempts) for c in calls]
    turns.scorer, tokens = counting.inner, counting.tokens
    assert turns.turn_cache.hits == 3
    ref = [plain.decide(c.query, c.candidates, c.knob, c.attempts) for c in calls]
    full = [len(plain.prompt_ids(c.query, c.candidates, c.knob, c.attempts)) for c in calls]
    assert len(tokens) == 3 and all(t < f / 2 for t, f in zip(tokens, full))  # the new turn and the actions, not the whole prompt
    batch_router = PolicyRouter(model, tok, PolicyConfig(mode="fast", max_rounds=2, engine=engine))
    batch_router.decide_batch([RouteCall(c.query, c.candidates, c.knob) for c in calls])  # first rounds, batched: kept per row
    assert len(batch_router.turn_cache) == 3
    batch = batch_router.decide_batch(calls + [RouteCall(specs[4].query, specs[4].descriptors, 0.3)])  # with a first round
    assert batch_router.turn_cache.hits == 3
    for got in (one, batch):
        for a, b in zip(got, ref):
            assert (a.action, a.model_id) == (b.action, b.model_id)
            assert max(abs(p - dict(b.ranking)[m]) for m, p in a.ranking) < 1e-4
    # the last allowed turn keeps nothing; a single-call router has no turns to keep
    assert len(turns.turn_cache) == 3
    single = PolicyRouter(model, tok, PolicyConfig(mode="fast", max_rounds=1))
    single.decide(specs[0].query, specs[0].descriptors, 0.1)
    assert len(single.turn_cache) == 0
    with pytest.raises(ValueError, match="turn_cache_entries"):
        PolicyConfig(mode="fast", turn_cache_entries=-1)


class _CountingScorer:
    """A scorer that records how many tokens each forward pass runs."""

    def __init__(self, inner):
        self.inner, self.tokens = inner, []

    def __call__(self, *args, **kwargs):
        self.tokens.append(kwargs["input_ids"].shape[-1])
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_prefix_cache_lookup_and_put(tiny):
    model, _ = tiny
    cache = PrefixCache(max_entries=2)
    assert cache.lookup([1, 2]) is None and cache.misses == 1 and len(cache) == 0  # nothing computed on a miss
    states = {i: run_context(model, [i, i + 1]) for i in (1, 2, 3)}
    for i, state in states.items():
        cache.put([i, i + 1], state)
    assert len(cache) == 2 and cache.lookup([1, 2]) is None  # the least recently used went first
    assert cache.lookup([3, 4]) is states[3] and cache.hits == 1
