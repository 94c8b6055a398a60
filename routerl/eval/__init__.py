"""Offline evaluation: run routers over recorded prompts (``runner``), read and write decision
files (``decisions``), compute the protocol's metrics (``metrics``, ``frontier``, ``references``),
the unseen-descriptor shuffle control (``shuffle``) and cost-quality plots (``plots``)."""
