"""The routerl gRPC service.

Modules, one job each:

* ``codegen``: regenerate ``proto/`` (the Python code generated from ``proto/routerl/v1/router.proto``);
* ``store``: the persistent model registry (SQLite, durable writes, a version counter);
* ``convert``: protobuf messages <-> ``ModelDescriptor``, enum names, update masks;
* ``requests``: validation of route requests and the candidate pool filters;
* ``router_loader``: which router the server runs (a baseline, the policy, or ``descriptor-score``);
* ``service``: the ``routerl.v1.Router`` servicer (RPC logic, status codes);
* ``handlers``: binds the servicer to gRPC with strict request decoding;
* ``config``: ``ServerConfig`` (flags and YAML);
* ``app``: server lifecycle (start, health, reflection, graceful shutdown).

The client lives in ``routerl.client``. Importing this package imports nothing heavy.
"""
