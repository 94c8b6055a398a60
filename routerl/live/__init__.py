"""Live models: calling OpenAI-compatible endpoints, probing new models, executing routed requests.

``provider``: one model behind an endpoint (timeouts, retries, usage-based cost);
``scorers``: task-specific answer scoring; ``probe``: probe sets, resumable probe runs and the
descriptor they yield; ``register``: where a probed descriptor goes (a catalog, a server hook);
``executor``: route, call, escalate or accept, fall back, within budgets; ``accounting``: spend
per model and per caller key; ``replay``: an endpoint that answers from recorded data.
"""
