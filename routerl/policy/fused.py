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
  attention output, the MLP and the final norm; every row's keys and values are still computed.

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
        """RMSNorm as transformers computes it (float32, then the weight in ``x``'s dtype), one kernel."""
        return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)

    @torch.no_grad()
    def __call__(
        self, input_ids, past_key_values=None, attention_mask=None, position_ids=None, use_cache=True, logits_to_keep=None
    ) -> FusedOutput:
        """``input_ids`` ``(B, S)``; ``past_key_values`` a ``DynamicCache`` of ``P`` positions or
        None; ``attention_mask`` ``(B, 1, S, P + S)`` bool or None (causal); ``position_ids``
        ``(B, S)`` or None (``P .. P+S-1``); ``logits_to_keep``: None (hidden states only, as
        ``model.get_decoder()`` returns), an int ``n`` (the last ``n`` rows) or a 1-D tensor of
        row indices (batch 1): only those rows get logits, and in the last layer only they go
        past the keys and values."""
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
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        nq, nkv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        last = len(self.layers) - 1
        blocked = None if attention_mask is None else ~attention_mask[:, :, None]  # (B, 1, 1, S, P + S), once for every layer
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(self._rms(x, layer.norm_in))  # (B, S, nq + 2 nkv)
            q = qkv[..., :nq].view(B, S, self.heads, self.head_dim).transpose(1, 2)
            k = qkv[..., nq : nq + nkv].view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
            v = qkv[..., nq + nkv :].view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            k, v = cache.update(k, v, i)  # (B, kvh, P + S, hd)
            mask = blocked
            if i == last and keep is not None:  # only the kept rows go on
                q, x, mask = q[:, :, keep], x[:, keep], None if mask is None else mask[:, :, :, keep]
            a = _attend(q, k, v, mask)
            x = x + layer.o(a.transpose(1, 2).reshape(B, q.shape[2], nq))
            gate_up = layer.gate_up(self._rms(x, layer.norm_post))
            x = x + layer.down(F.silu(gate_up[..., : self.intermediate]) * gate_up[..., self.intermediate :])
        hidden = self._rms(x, self.norm)
        logits = self.head(hidden) if keep is not None else None
        return FusedOutput(logits=logits, last_hidden_state=hidden, past_key_values=cache)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, blocked: torch.Tensor | None) -> torch.Tensor:
    """Attention of ``q`` ``(B, nh, S, hd)`` over ``k``, ``v`` ``(B, kvh, T, hd)``; ``blocked``
    ``(B or 1, 1, 1, S, T)`` bool marks the keys a query may not see (None: it sees every key;
    the forward inverts its attention mask once for all layers): two batched matmuls with the query heads of
    each key/value head stacked (no repeated keys), softmax in float32. Faster than SDPA's CPU
    flash kernel for these short rows (a few dozen queries over a few hundred keys)."""
    B, nh, S, hd = q.shape
    kvh, T = k.shape[1], k.shape[2]
    g = nh // kvh
    scores = torch.matmul(q.reshape(B, kvh, g * S, hd), k.transpose(-1, -2)).view(B, kvh, g, S, T).float()
    scores.mul_(hd**-0.5)
    if blocked is not None:
        scores.masked_fill_(blocked, float("-inf"))
    probs = scores.softmax(-1).to(v.dtype).view(B, kvh, g * S, T)
    return torch.matmul(probs, v).view(B, nh, S, hd)
