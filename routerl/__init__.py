"""routerl: an LLM router whose policy reads model descriptors and routes each query.

Subpackages: ``data`` (outcome tables, splits, synthetic world), ``descriptors`` (model
descriptors, rendering, catalogs), ``env`` (routing episodes), ``reward`` (reward terms),
``routers`` (the ``Router`` interface and baseline routers), ``eval`` (protocol metrics, runs,
plots), ``policy`` (the LLM policy), ``server`` (gRPC service and registry).
"""

__version__ = "0.1.0"
