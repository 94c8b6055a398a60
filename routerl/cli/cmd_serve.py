"""``routerl serve``: run the gRPC router service (see ``routerl.server``).

    routerl serve --port 50051 --db routerl.db --catalog configs/catalog/default.yaml
    routerl serve --config serve.yaml --router knn-probe --data ../shared/data/zeroeval.jsonl.gz
    routerl serve --checkpoint runs/policy_smollm2/final  # another trained policy (default: the shipped one)
    ROUTERL_TOKEN=... ROUTERL_ADMIN_TOKEN=... routerl serve --host 0.0.0.0 \
        --tls-cert server.crt --tls-key server.key \
        --auth-token-env ROUTERL_TOKEN --admin-token-env ROUTERL_ADMIN_TOKEN --metrics-port 9464

    # Complete: answer queries through the registered models' endpoints, within budgets
    routerl serve --complete-max-rounds 2 --complete-budget-usd 0.05 --provider-timeout 30 \
        --key-budget-usd 10 --key-budget tenant-a=50 --key-budget-policy refuse

Prints ``listening on HOST:PORT`` once it accepts calls; SIGTERM/SIGINT drain and stop it.
"""

from __future__ import annotations

import argparse
import logging

from routerl.cli.client_args import key_values


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="run the gRPC router service", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file of server settings (flags override it)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, help="port (default 50051; 0 = any free port, printed)")
    p.add_argument("--workers", type=int, help="calls running at once, per lane (Route; registry) (default 8)")
    p.add_argument("--max-queue", type=int, help="calls waiting for a slot, per lane; more get RESOURCE_EXHAUSTED (default 32)")
    p.add_argument("--queue-timeout", type=float, dest="queue_timeout_s",
                   help="longest wait for a slot in seconds; then RESOURCE_EXHAUSTED (default 2)")
    p.add_argument("--max-batch", type=int, help="Route requests per decide_batch call, for routers that batch (default 16; 1 = off)")
    p.add_argument("--batch-wait-ms", type=float, help="how long a batch waits for more requests (default 2)")
    p.add_argument("--max-receive-bytes", type=int, help="largest request message (default 4 MiB)")
    p.add_argument("--max-send-bytes", type=int, help="largest response message (default 4 MiB)")
    p.add_argument("--db", help="SQLite registry file (default routerl.db; created and seeded when new)")
    p.add_argument("--catalog", help="catalog YAML that seeds a new registry (default configs/catalog/default.yaml)")
    p.add_argument("--router", help="router name from the registry (default: the shipped policy, else descriptor-score; $ROUTERL_DEFAULT_ROUTER overrides)")
    p.add_argument("--router-opt", action="append", metavar="KEY=VALUE", help="router option (repeatable)")
    p.add_argument("--checkpoint", help="serve the trained policy from this checkpoint")
    p.add_argument("--data", help="outcome table for routers that read one")
    p.add_argument("--splits", help="splits.json for routers that read one")
    p.add_argument("--grace", type=float, dest="grace_s", help="seconds in-flight calls get at shutdown (default 10)")
    p.add_argument("--max-query-chars", type=int, help="longest query accepted (default 100000)")
    p.add_argument("--max-think-budget", type=int, help="largest think budget accepted (default 4096)")
    p.add_argument("--default-mode", choices=["quality", "balanced", "cost"], help="mode of requests naming none")
    sec = p.add_argument_group("security (tokens come from environment variables or files, never flags)")
    sec.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key)")
    sec.add_argument("--tls-key", help="PEM private key of --tls-cert")
    sec.add_argument("--auth-token-env", metavar="NAME", help="environment variable holding the routing token")
    sec.add_argument("--auth-token-file", metavar="PATH", help="file holding the routing token")
    sec.add_argument("--admin-token-env", metavar="NAME", help="environment variable holding the admin token (registry writes)")
    sec.add_argument("--admin-token-file", metavar="PATH", help="file holding the admin token")
    obs = p.add_argument_group("observability")
    obs.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (default 0: off)")
    obs.add_argument("--metrics-host", help="address of the metrics endpoint (default: --host)")
    obs.add_argument("--access-log", help="one JSON line per call: '-' stderr (default), a file path, or 'off'")
    obs.add_argument("--log-queries", action="store_true", default=None, help="include query text in the access log")
    comp = p.add_argument_group("Complete (calls models through their registered endpoints)")
    comp.add_argument("--complete-workers", type=int, help="Complete calls running at once, in their own lane (default 8)")
    comp.add_argument("--complete-max-rounds", type=int, help="most model-calling rounds per request (default 2)")
    comp.add_argument("--complete-budget-usd", type=float, help="spend cap per request in USD (default none)")
    comp.add_argument("--complete-timeout", type=float, dest="complete_timeout_s",
                      help="time limit per request in seconds (default 120; a caller's deadline may cut it)")
    comp.add_argument("--provider-timeout", type=float, dest="provider_timeout_s", help="timeout per model call in seconds (default 60)")
    comp.add_argument("--provider-retries", type=int, help="tries per model call on 429/5xx/connection errors (default 3)")
    comp.add_argument("--provider-backoff", type=float, dest="provider_backoff_s",
                      help="first retry wait in seconds, doubled per retry (default 0.5)")
    comp.add_argument("--provider-max-tokens", type=int, help="cap on answer tokens per model call (default none)")
    comp.add_argument("--key-budget-usd", type=float, help="budget of every caller key in USD (default unlimited)")
    comp.add_argument("--key-budget", action="append", metavar="KEY=USD", help="budget of one caller key (repeatable)")
    comp.add_argument("--key-budget-policy", choices=["cheapest", "refuse"],
                      help="a key past its budget: call the cheapest acceptable model (default), or refuse (FAILED_PRECONDITION)")
    comp.add_argument("--key-budget-min-score", type=float,
                      help="overall probe score a model needs to be 'acceptable' for the cheapest policy (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from routerl.server.app import serve
    from routerl.server.config import ServerConfig
    from routerl.server.store import StoreError

    config = ServerConfig.from_file(args.config) if args.config else ServerConfig()
    overrides = {
        name: getattr(args, name)
        for name in ("host", "port", "workers", "max_receive_bytes", "max_send_bytes", "db", "catalog", "router",
                     "checkpoint", "data", "splits", "grace_s", "max_query_chars", "max_think_budget", "default_mode",
                     "max_queue", "queue_timeout_s", "max_batch", "batch_wait_ms", "tls_cert", "tls_key",
                     "auth_token_env", "auth_token_file", "admin_token_env", "admin_token_file", "metrics_port",
                     "metrics_host", "access_log", "log_queries", "complete_workers", "complete_max_rounds",
                     "complete_budget_usd", "complete_timeout_s", "provider_timeout_s", "provider_retries",
                     "provider_backoff_s", "provider_max_tokens", "key_budget_usd", "key_budget_policy",
                     "key_budget_min_score")
    }
    if args.router_opt:
        overrides["router_options"] = {**config.router_options, **key_values(args.router_opt, "--router-opt")}
    if args.key_budget:
        overrides["key_budgets"] = {**config.key_budgets, **key_values(args.key_budget, "--key-budget", float)}
    config = config.with_overrides(overrides)
    if not getattr(args, "verbose", False):
        # Complete's provider calls would log one INFO line per HTTP request; the access log has them.
        for name in ("httpx", "httpx2", "openai"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return serve(config)
    except (StoreError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(str(exc)) from None
