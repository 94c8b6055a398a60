"""The routing policy: a small causal LM that reads the query and the candidates' descriptors.

``loading``: base models and tokenizers (the embedded SmolLM2 default, a tiny test model);
``prompt``: the chat prompt; ``scoring``: fast mode (every action scored in one batched pass);
``decoding``: think mode (generate under a budget, then act); ``router``: ``PolicyRouter``, the
policy behind the ``Router`` interface, and ``load_policy_router``.
"""

from routerl.policy.loading import DEFAULT_BASE, TinySpec, load_base, load_tokenizer
from routerl.policy.router import PolicyConfig, PolicyRouter, load_policy_router

__all__ = ["DEFAULT_BASE", "TinySpec", "load_base", "load_tokenizer", "PolicyConfig", "PolicyRouter", "load_policy_router"]
