"""The fused Llama forward (``routerl.policy.fused``) computes what the transformers forward does."""

from __future__ import annotations

import pytest
import torch

from routerl.policy.fused import FusedLlama, supports
from routerl.policy.loading import TinySpec, load_base
from routerl.policy.scoring import _ancestors, _plan, fork_cache, packed_logprobs, packed_logprobs_many, run_context


@pytest.fixture(scope="module")
def pair():
    torch.set_num_threads(1)
    model, tok = load_base("tiny", tiny=TinySpec(seed=11))
    model.eval()
    return model, FusedLlama(model)


def test_fusing_keeps_the_model_and_shares_its_weights(pair):
    model, fused = pair
    layer = model.get_decoder().layers[0]
    assert layer.self_attn.k_proj.weight.data_ptr() == fused.layers[0].qkv.weight[layer.self_attn.q_proj.weight.shape[0]].data_ptr()
    assert layer.mlp.up_proj.weight.untyped_storage().data_ptr() == fused.layers[0].gate_up.weight.untyped_storage().data_ptr()
    assert supports(model)
    int8 = torch.ao.quantization.quantize_dynamic(load_base("tiny", tiny=TinySpec(seed=11))[0], {torch.nn.Linear}, dtype=torch.qint8)
    assert not supports(int8)
    with pytest.raises(ValueError, match="Llama"):
        FusedLlama(int8)


@torch.no_grad()
def test_same_hidden_states_and_logits_as_transformers(pair):
    model, fused = pair
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (1, 9), generator=g)
    ref = model(input_ids=ids, use_cache=True)
    out = fused(input_ids=ids, logits_to_keep=ids.shape[1])  # no cache: causal
    assert torch.allclose(out.logits, ref.logits, atol=1e-4)
    for a, b in zip(out.past_key_values.layers, ref.past_key_values.layers):
        assert torch.allclose(a.keys, b.keys, atol=1e-5) and torch.allclose(a.values, b.values, atol=1e-5)
    # after a cached prefix, a tree mask and explicit positions (the scorer's packed row), kept rows only
    state = run_context(model, ids[0].tolist())
    plan = _plan([5, 6, 7], [[8, 9], [8, 10], [11]], True)
    P, N = state.length, len(plan.tokens)
    mask = torch.cat([torch.ones((N, P), dtype=torch.bool), _ancestors(plan.parent)], dim=1)[None, None]
    pos = torch.tensor([[P + p for p in plan.pos]])
    keep = torch.tensor([2, 3])
    x = torch.tensor([plan.tokens])
    ref = model(input_ids=x, past_key_values=fork_cache(state.cache), attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=keep)
    out = fused(input_ids=x, past_key_values=fork_cache(state.cache), attention_mask=mask, position_ids=pos, logits_to_keep=keep)
    assert out.logits.shape == ref.logits.shape and torch.allclose(out.logits, ref.logits, atol=1e-4)
    # the decoder interface (padded batches): hidden states of every row
    hid = fused.get_decoder()(input_ids=x.repeat(2, 1), past_key_values=_repeat(state.cache, 2), attention_mask=mask.repeat(2, 1, 1, 1), position_ids=pos.repeat(2, 1)).last_hidden_state
    ref = model.get_decoder()(input_ids=x.repeat(2, 1), past_key_values=_repeat(state.cache, 2), attention_mask=mask.repeat(2, 1, 1, 1), position_ids=pos.repeat(2, 1), use_cache=True).last_hidden_state
    assert torch.allclose(hid, ref, atol=1e-4)
    # continuing a cache with no mask (causal after the prefix)
    ref = model(input_ids=x, past_key_values=fork_cache(state.cache), use_cache=True, logits_to_keep=1)
    out = fused(input_ids=x, past_key_values=fork_cache(state.cache), logits_to_keep=1)
    assert torch.allclose(out.logits, ref.logits, atol=1e-4)


def _repeat(cache, n):
    c = fork_cache(cache)
    c.batch_repeat_interleave(n)
    return c


def test_scoring_with_the_fused_forward_matches(pair):
    model, fused = pair
    conts = [[8, 9], [8, 10], [11]]
    ref_state, state = run_context(model, [1, 2, 3, 4]), run_context(fused, [1, 2, 3, 4])
    assert torch.allclose(state.last, ref_state.last, atol=1e-4)
    assert torch.allclose(packed_logprobs(fused, state, [5, 6], conts), packed_logprobs(model, ref_state, [5, 6], conts), atol=1e-4)
    items = [([5, 6], conts), ([7], conts[:2]), ([5, 6, 7, 2], conts)]
    for a, b in zip(packed_logprobs_many(fused, state, items), packed_logprobs_many(model, ref_state, items)):
        assert torch.allclose(a, b, atol=1e-4)


@torch.no_grad()
def test_bfloat16_padded_batches_match_transformers():
    """In bfloat16 (as served), a padded batch through the fused forward, which projects only the
    real rows (``real_rows``) and attends with an additive bias, scores what the transformers
    forward scores for each item alone, within bfloat16 rounding."""
    torch.set_num_threads(1)
    model, _ = load_base("tiny", tiny=TinySpec(seed=5))
    model = model.to(torch.bfloat16).eval()
    ref_state = run_context(model, [1, 2, 3, 4, 5, 6])
    fused = FusedLlama(model)
    state = run_context(fused, [1, 2, 3, 4, 5, 6])
    conts = [[8, 9], [8, 10], [11]]
    items = [([5, 6], conts), ([7], conts[:2]), ([5, 6, 7, 2, 9, 4], conts)]
    batched = packed_logprobs_many(fused, state, items)
    for (suffix, c), got in zip(items, batched):
        alone = packed_logprobs(model, ref_state, suffix, c)
        assert got.shape == alone.shape and torch.allclose(got, alone, atol=0.05), (got, alone)
        assert int(got.argmax()) == int(alone.argmax())


def test_bfloat16_rms_norm_rounds_once_like_the_float32_path():
    """``FusedLlama._rms`` normalises bfloat16 activations directly: the kernel accumulates in
    float32 and rounds once, the values transformers gets by upcasting first."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(4, 37, 96, generator=g) * 5).to(torch.bfloat16)
    assert torch.equal(torch.nn.functional.rms_norm(x, (96,), eps=1e-5), torch.nn.functional.rms_norm(x.float(), (96,), eps=1e-5).to(torch.bfloat16))


def test_repeated_rows_are_views_and_leave_the_cached_state_alone(pair):
    from routerl.policy.scoring import _repeat_rows

    model, _ = pair
    state = run_context(model, [1, 2, 3, 4])
    before = [layer.keys.clone() for layer in state.cache.layers]
    cache = _repeat_rows(fork_cache(state.cache), 3)
    ref = fork_cache(state.cache)
    ref.batch_repeat_interleave(3)
    for a, b, orig, kept in zip(cache.layers, ref.layers, state.cache.layers, before):
        assert a.keys.shape == b.keys.shape and torch.equal(a.keys, b.keys) and a.keys.stride(0) == 0
        assert orig.keys.shape[0] == 1 and torch.equal(orig.keys, kept)


@torch.no_grad()
def test_rows_with_their_own_cached_extensions_score_as_alone(pair):
    """Items that continue different states (a cached knob line of 0, 1 or 3 tokens after a shared
    system state) share one padded pass and each equals ``packed_logprobs`` after its own state,
    through the transformers forward and the fused one."""
    model, fused = pair
    conts = [[8, 9], [8, 10], [11]]
    for m in (model, fused):
        shared = run_context(m, [1, 2, 3, 4])
        own = [shared, run_context(m, [12], shared), run_context(m, [13, 14, 15], shared)]
        items = [([5, 6], conts), ([7], conts[:2]), ([5, 6, 7, 2], conts), ([], conts)]
        states = [own[0], own[2], own[1], own[2]]
        batched = packed_logprobs_many(m, shared, items, states)
        for (suffix, c), st, got in zip(items, states, batched):
            assert torch.allclose(got, packed_logprobs(m, st, suffix, c), atol=1e-4)
        for layer in shared.cache.layers:
            assert layer.keys.shape[2] == 4  # the shared state is not extended in place
    with pytest.raises(ValueError, match="extend"):
        packed_logprobs_many(model, own[1], items[:2], [shared, own[1]])


@torch.no_grad()
def test_relative_scores_give_the_same_option_probabilities(pair):
    """``relative=True`` (the router softmaxes the scores over an item's options): an item whose
    options share their rows skips the full-vocabulary head and its scores differ from the
    log-likelihoods by one constant; an item whose options use different rows (an accept option
    beside routes) keeps its log-likelihoods. Batch 1 and padded batches alike."""
    model, fused = pair
    state = run_context(fused, [1, 2, 3, 4])
    same_rows = [[8, 9], [8, 10], [8, 11]]  # one shared token, then the distinguishing one
    mixed = [[8, 9], [8, 10], [11]]
    items = [([5, 6], same_rows), ([7], mixed), ([5, 6, 7, 2], same_rows), ([], same_rows)]
    exact = packed_logprobs_many(fused, state, items)
    for got in (packed_logprobs_many(fused, state, items, relative=True), [packed_logprobs(fused, state, s, c, relative=True) for s, c in items]):
        for (suffix, conts), a, b in zip(items, got, exact):
            assert torch.allclose(torch.softmax(a, -1), torch.softmax(b, -1), atol=1e-5)
            if conts is mixed:
                assert torch.allclose(a, b, atol=1e-5)  # log-likelihoods kept
    shifted = packed_logprobs(fused, state, [5, 6], same_rows, relative=True)
    assert not torch.allclose(shifted, packed_logprobs(fused, state, [5, 6], same_rows), atol=1e-3)  # the normaliser left out
    # a model without the fused engine's head switch computes log-likelihoods either way
    ref = run_context(model, [1, 2, 3, 4])
    assert torch.allclose(packed_logprobs(model, ref, [5, 6], same_rows, relative=True), packed_logprobs(model, ref, [5, 6], same_rows), atol=1e-6)
