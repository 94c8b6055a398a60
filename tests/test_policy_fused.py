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
