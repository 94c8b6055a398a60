"""The routerl gRPC service.

Modules, one job each:

* ``codegen``: regenerate ``proto/`` (the Python code generated from ``proto/routerl/v1/router.proto``);
* ``store``: the persistent model registry (SQLite, durable writes, a version counter);
* ``convert``: protobuf messages <-> ``ModelDescriptor``, enum names, update masks;
* ``requests``: validation of route requests and the candidate pool filters;
* ``router_loader``: which router the server runs (a baseline, the policy, or ``descriptor-score``);
* ``service``: the ``routerl.v1.Router`` servicer (RPC logic, status codes, paged listings);
* ``batching``: micro-batching of concurrent ``Route`` calls for routers with ``decide_batch``;
* ``complete``: the ``Complete``/``CompleteStream`` RPCs: the live executor over the registry's
  models with endpoints, the spend ledger, key resolution and status mapping;
* ``admission``: load limits (bounded concurrency and a bounded, time-limited queue per lane:
  Route, registry, Complete);
* ``auth``: bearer tokens (routing and admin), compared in constant time, never logged;
* ``observe``: Prometheus metrics, the JSON access log, request ids;
* ``handlers``: binds the servicer to gRPC: strict decoding, auth, lanes, metrics, access log;
* ``config``: ``ServerConfig`` (flags and YAML);
* ``app``: server lifecycle (start, TLS, health, reflection, metrics endpoint, graceful shutdown).

The client lives in ``routerl.client``. Importing this package imports nothing heavy.
"""
