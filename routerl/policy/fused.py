"""A lean forward pass of Llama-family decoders for fast-mode scoring on CPU (``engine: fused``).

    lean = FusedLlama(model)          # model: a merged LlamaForCausalLM (SmolLM2 is one)
    out = lean(input_ids=ids, past_key_values=cache, attention_mask=mask, position_ids=pos,
               logits_to_keep=rows)   # the subset of the HF call signature the scorer uses

The same arithmetic as ``transformers``' Llama (RMSNorm in float32, rotary embeddings from the
model's own ``rotary_emb``, attention with grouped KV heads and a float32 softmax), in fewer and
larger operations:

* the q, k and v projections are one matmul per layer (``[576 -> 960]`` for SmolLM2-135M), and
  gate and up are one (``[576 -> 3072]``): 4 matmuls per layer instead of 7;
* no module dispatch, hooks or mask preparation per layer (the scorer builds its masks);
* in the last layer only the rows that reach the output head (``logits_to_keep``) go through the
  attention output, the MLP and the final norm; every row's keys and values are still computed;
* q's and k's rotary embeddings in one pass; the attention mask becomes an additive bias once per
  forward, so the scores are one ``baddbmm`` and a softmax (no per-layer masking, scaling or
  float32 copies of the scores);
* padded batches (``real_rows``): the projections, norms and MLP run on the real tokens only, and
  only attention sees the padded ``(B, S)`` layout.

It reads and extends the same ``DynamicCache`` the HF model uses (``cache.update``), so cached
prefixes, ``fork_cache`` and ``batch_repeat_interleave`` work unchanged, and its numbers equal the
HF forward's within float rounding (``tests/test_policy_fused.py``). ``supports(model)`` says
whether a model can run this way (Llama architecture, no biases, default rotary embeddings);
the router falls back to the HF forward otherwise. Measured gains: ``python -m routerl.bench.variants``.

Shapes: ``B`` rows, ``S`` new tokens per row, ``P`` cached positions, ``H`` hidden size, ``nh``
query heads and ``kvh`` key/value heads of ``hd`` dims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


def supports(model) -> bool:
    """Whether ``FusedLlama`` reproduces ``model``'s forward: a Llama causal LM without biases,
    with SiLU and default (unscaled) rotary embeddings."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) != "llama":
        return False
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return (
        not getattr(config, "attention_bias", False)
        and not getattr(config, "mlp_bias", False)
        and getattr(config, "hidden_act", "silu") == "silu"
        and rope.get("rope_type", "default") == "default"
        and all(type(m) is torch.nn.Linear for l in model.get_decoder().layers for m in (*_attention(l), *_mlp(l)))
    )


def _attention(layer) -> tuple:
    a = layer.self_attn
    return a.q_proj, a.k_proj, a.v_proj, a.o_proj


def _mlp(layer) -> tuple:
    return layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj


class _Linear:
    """``y = x @ weight.T``, through a oneDNN-prepacked copy of ``weight`` where this torch build
    has one (10-20% faster than ``F.linear`` at 60-600 rows here, identical results in bfloat16:
    ``F.linear`` reorders the weight on every call), else ``F.linear``."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight
        self.packed = None
        if weight.device.type == "cpu" and torch.backends.mkldnn.is_available():
            try:
                self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 64)  # 64: a typical row count
            except (RuntimeError, AttributeError):  # an op this build lacks
                self.packed = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None and x.dtype == self.weight.dtype:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
        return F.linear(x, self.weight)


@dataclass
class _Layer:
    qkv: _Linear  # weight (nh*hd + 2*kvh*hd, H)
    o: _Linear  # (H, nh*hd)
    gate_up: _Linear  # (2*I, H)
    down: _Linear  # (H, I)
    norm_in: torch.Tensor  # (H,)
    norm_post: torch.Tensor  # (H,)


@dataclass
class FusedOutput:
    """``logits``: ``(B, R, V)`` for the kept rows (``R`` = all ``S`` when none were given);
    ``last_hidden_state``: ``(B, S, H)`` (kept rows only when ``logits_to_keep`` was given);
    ``past_key_values``: the extended cache."""

    logits: torch.Tensor | None
    last_hidden_state: torch.Tensor
    past_key_values: Any


class FusedLlama:
    """See the module docstring. The fused weights are built once; the model's own q/k/v and
    gate/up weights are then replaced by views into them, so no memory is doubled and the model
    (think mode, the uncached reference path) keeps computing exactly as before."""

    # The scorer's lean calls (``routerl.policy.scoring._lean``): ``real_rows`` (padded batches without
    # projecting the padding) and ``head=False`` (the kept rows' hidden states, no output head).
    lean_scoring = True

    def __init__(self, model):
        if not supports(model):
            raise ValueError("FusedLlama needs a Llama causal LM without biases and with default rotary embeddings")
        c = model.config
        self.heads = c.num_attention_heads
        self.kv_heads = c.num_key_value_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // self.heads
        self.intermediate = c.intermediate_size
        self.eps = c.rms_norm_eps
        decoder = model.get_decoder()
        self.embed = model.get_input_embeddings().weight
        self.rotary = decoder.rotary_emb
        self.norm = decoder.norm.weight
        self.head = _Linear(model.get_output_embeddings().weight)  # (V, H)
        self.layers = [self._fuse(l) for l in decoder.layers]

    @staticmethod
    @torch.no_grad()
    def _fuse(layer) -> _Layer:
        q, k, v, o = _attention(layer)
        gate, up, down = _mlp(layer)
        qkv = torch.cat([q.weight, k.weight, v.weight]).contiguous()
        gate_up = torch.cat([gate.weight, up.weight]).contiguous()
        for fused, modules in ((qkv, (q, k, v)), (gate_up, (gate, up))):
            start = 0
            for module in modules:
                n = module.weight.shape[0]
                module.weight = torch.nn.Parameter(fused[start : start + n], requires_grad=False)  # a view: no copy kept
                start += n
        return _Layer(
            qkv=_Linear(qkv), o=_Linear(o.weight), gate_up=_Linear(gate_up), down=_Linear(down.weight),
            norm_in=layer.input_layernorm.weight, norm_post=layer.post_attention_layernorm.weight,
        )  # fmt: skip

    # The scorer's model interface -------------------------------------------------------------
    def parameters(self):
        yield self.embed

    def get_decoder(self):
        return self

    def get_output_embeddings(self):
        return self.head

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """RMSNorm as transformers computes it (float32, then the weight in ``x``'s dtype), one
        kernel: ``rms_norm`` accumulates in float32 and rounds once, the same values as
        normalising an upcast copy and casting back (``tests/test_policy_fused.py``)."""
        return weight * F.rms_norm(x, (x.shape[-1],), eps=self.eps)

    @torch.no_grad()
    def __call__(
        self, input_ids, past_key_values=None, attention_mask=None, position_ids=None, use_cache=True, logits_to_keep=None,
        real_rows=None, head=True,
    ) -> FusedOutput:  # fmt: skip
        """``input_ids`` ``(B, S)``; ``past_key_values`` a ``DynamicCache`` of ``P`` positions or
        None; ``attention_mask`` ``(B, 1, S, P + S)`` bool or None (causal); ``position_ids``
        ``(B, S)`` or None (``P .. P+S-1``); ``logits_to_keep``: None (hidden states only, as
        ``model.get_decoder()`` returns), an int ``n`` (the last ``n`` rows) or a 1-D tensor of
        row indices (batch 1): only those rows get logits, and in the last layer only they go
        past the keys and values.

        ``real_rows`` (padded batches): a 1-D tensor of the ``N`` flat indices (into ``B * S``)
        of the positions that hold real tokens. The projections, norms and MLP then run on those
        ``N`` rows only, not on the padding; attention runs in the padded ``(B, S)`` layout.
        ``logits_to_keep`` is then a 1-D tensor of indices into the ``N`` real rows, and the
        result's ``logits`` are ``(1, R, V)`` and ``last_hidden_state`` ``(1, R, H)``.

        ``head=False``: the kept rows' final hidden states only (``logits`` None), for a caller
        that needs a few tokens' logits (``routerl.policy.scoring``'s relative scores)."""
        from transformers import DynamicCache

        B, S = input_ids.shape
        cache = past_key_values if past_key_values is not None else DynamicCache()
        P = cache.get_seq_length()
        device = self.embed.device
        if position_ids is None:
            position_ids = torch.arange(P, P + S, device=device).expand(B, S)
        if attention_mask is None and S > 1:  # causal: new row s sees the cache and new rows <= s
            attention_mask = torch.ones((S, P + S), dtype=torch.bool, device=device).tril(P)[None, None]
        keep = None
        if logits_to_keep is not None:
            keep = torch.arange(S - int(logits_to_keep), S, device=device) if isinstance(logits_to_keep, int) else logits_to_keep
        x = F.embedding(input_ids, self.embed)  # (B, S, H)
        cos, sin = self.rotary(x, position_ids)  # (B, S, hd)
        if real_rows is not None:  # the real rows only: (1, N, ...)
            x, cos, sin = (t.reshape(B * S, t.shape[-1])[real_rows][None] for t in (x, cos, sin))
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # (B or 1, S or N, 1, hd): over the heads of (.., heads, hd)
        nh, kvh, hd = self.heads, self.kv_heads, self.head_dim
        nq, nkv = nh * hd, kvh * hd
        last = len(self.layers) - 1
        bias = _bias(attention_mask, B, kvh, nh // kvh, S, P + S, x.dtype)  # once for every layer
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(self._rms(x, layer.norm_in))  # (B, S, nq + 2 nkv), or (1, N, ..)
            qk = qkv[..., : nq + nkv].unflatten(-1, (nh + kvh, hd))
            qk = qk * cos + _rotate_half(qk) * sin  # q's and k's rotary embeddings at once
            v = qkv[..., nq + nkv :]
            if real_rows is not None:  # to the padded layout
                qk, v = _pad(qk, real_rows, B * S).view(B, S, nh + kvh, hd), _pad(v, real_rows, B * S)
            q, k = qk[:, :, :nh].transpose(1, 2), qk[:, :, nh:].transpose(1, 2)  # (B, nh | kvh, S, hd)
            k, v = cache.update(k, v.view(B, S, kvh, hd).transpose(1, 2), i)  # (B, kvh, P + S, hd)
            layer_bias, tail = bias, i == last and keep is not None  # tail: only the kept rows go on
            if tail and real_rows is None:  # before attention: only their queries
                q, x = q[:, :, keep], x[:, keep]
                layer_bias = None if attention_mask is None else _bias(attention_mask[:, :, keep], B, kvh, nh // kvh, len(keep), P + S, x.dtype)
            a = _attend(q, k, v, layer_bias).transpose(1, 2)  # (B, S', nh, hd)
            a = a.reshape(B * a.shape[1], nq)[real_rows][None] if real_rows is not None else a.reshape(B, a.shape[1], nq)
            if tail and real_rows is not None:  # padded batches: after attention, back in the real rows
                a, x = a[:, keep], x[:, keep]
            x = x + layer.o(a)
            gate_up = layer.gate_up(self._rms(x, layer.norm_post))
            x = x + layer.down(F.silu(gate_up[..., : self.intermediate]) * gate_up[..., self.intermediate :])
        hidden = self._rms(x, self.norm)
        logits = self.head(hidden) if keep is not None and head else None
        return FusedOutput(logits=logits, last_hidden_state=hidden, past_key_values=cache)


def _pad(x: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """``x`` ``(1, N, ...)`` (the real rows) -> ``(n, ...)`` with row ``rows[j]`` = ``x[0, j]``
    and zeros elsewhere (padding: its keys are masked and its outputs dropped)."""
    out = x.new_zeros((n, *x.shape[2:]))
    return out.index_copy_(0, rows, x[0])


def _bias(mask: torch.Tensor | None, B: int, kvh: int, g: int, S: int, T: int, dtype) -> torch.Tensor | None:
    """The attention mask ``(B or 1, 1, S, T)`` bool (True: may attend) as an additive bias in the
    scores' layout ``(B * kvh, g * S, T)`` (0 or -inf), built once per forward (``_attend``)."""
    if mask is None:
        return None
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
    return bias[:, :, None].expand(B, kvh, g, S, T).reshape(B * kvh, g * S, T)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Attention of ``q`` ``(B, nh, S, hd)`` over ``k``, ``v`` ``(B, kvh, T, hd)``; ``bias``
    ``(B * kvh, g * S, T)`` is 0 where a query may see a key and -inf where not (``_bias``; None:
    it sees every key). Three operations with the query heads of each key/value head stacked (no
    repeated keys): the scaled scores plus the bias in one ``baddbmm``, a softmax that accumulates
    in float32 and rounds once, and the weighted sum. The scores are rounded to the model's dtype
    where transformers rounds them (after the matmul; the scale ``hd ** -0.5`` is a power of two
    for SmolLM2's 64-dim heads, so scaling first rounds the same). Faster than SDPA's CPU flash
    kernel for these short rows (a few dozen queries over a few hundred keys)."""
    B, nh, S, hd = q.shape
    kvh, T = k.shape[1], k.shape[2]
    g = nh // kvh
    qs = q.reshape(B * kvh, g * S, hd)
    ks = k.reshape(B * kvh, T, hd).transpose(1, 2)
    if bias is None:
        scores = torch.bmm(qs, ks).mul_(hd**-0.5)
    else:
        scores = torch.baddbmm(bias, qs, ks, alpha=hd**-0.5)
    probs = scores.softmax(-1)
    return torch.bmm(probs, v.reshape(B * kvh, T, hd)).view(B, nh, S, hd)
