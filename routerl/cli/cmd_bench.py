"""``routerl bench``: latency, throughput and memory of the router service on loopback.

    routerl bench                                              # descriptor-score, c=1 and c=8
    routerl bench --router policy --router-opt mode=fast --router-opt cache=true --compare cache=false
    routerl bench --router policy --router-opt mode=fast --compare server.max-batch=1   # batching vs not
    routerl bench --requests 2000 --concurrency 1,8,32 --out bench.json

Starts ``routerl serve`` as a subprocess on 127.0.0.1 with an 8-model pool and prints, in one run:
the transport floor (health-check and ListModels p50), Route() p50/p95/p99 and routes/s at each
concurrency, and the server's RSS after start-up and at its peak. With ``--compare``, a baseline
server (the same options with these changed) is measured first and the report gives ratios;
``server.FLAG=VALUE`` changes a ``routerl serve`` flag, any other key a router option.
Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from routerl.cli import CliError
from routerl.cli.client_args import key_values
from routerl.cli.output_paths import output_file


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark the router service on loopback", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--router", default="descriptor-score", help="router to serve (default descriptor-score; 'policy')")
    p.add_argument("--router-opt", action="append", metavar="KEY=VALUE", help="router option (repeatable), e.g. cache=true")
    p.add_argument("--checkpoint", help="serve the policy from this checkpoint")
    p.add_argument("--compare", action="append", metavar="KEY=VALUE",
                   help="measure a baseline with these options changed first (repeatable); server.FLAG=VALUE for serve flags")
    p.add_argument("--server-opt", action="append", metavar="FLAG=VALUE",
                   help="extra routerl serve flag for every variant, e.g. workers=16 (repeatable)")
    p.add_argument("--requests", type=int, default=400, help="Route calls per concurrency level (default 400)")
    p.add_argument("--concurrency", default="1,8", help="comma-separated concurrency levels (default 1,8)")
    p.add_argument("--warmup", type=int, default=30, help="Route calls before measuring (default 30)")
    p.add_argument("--floor-calls", type=int, default=300, help="health checks and ListModels calls for the floor (default 300)")
    p.add_argument("--call-timeout", type=float, default=120.0, help="deadline of each Route call in seconds (default 120)")
    p.add_argument("--repeat", type=int, default=1, help="run every variant N times, interleaved; report medians (default 1)")
    p.add_argument("--out", help="also write the results as JSON to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from routerl.bench.service import environment, format_report, run_bench

    try:
        concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        raise CliError(f"--concurrency expects numbers like 1,8, got {args.concurrency!r}") from None
    if (not concurrencies or min(concurrencies) < 1 or args.requests < 1 or args.warmup < 0 or args.floor_calls < 1
            or args.repeat < 1):
        raise CliError("--concurrency levels, --requests, --floor-calls and --repeat must be >= 1, --warmup >= 0")
    if len(set(concurrencies)) != len(concurrencies):  # the report keys levels by concurrency: one would be lost
        raise CliError(f"--concurrency lists a level twice: {args.concurrency!r}")
    if not 0 < args.call_timeout <= 3600:  # the server's queue timeout follows it (its own limit: 3600 s)
        raise CliError(f"--call-timeout must be in (0, 3600] seconds, got {args.call_timeout}")
    router_options = key_values(args.router_opt, "--router-opt")
    compare = key_values(args.compare, "--compare")
    server_options = key_values(args.server_opt, "--server-opt")
    command = "routerl " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "routerl bench"
    if args.out:
        output_file(args.out, "--out")  # before the benchmark runs, not after

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        results = run_bench(router=args.router, router_options=router_options, compare=compare, checkpoint=args.checkpoint,
                            requests=args.requests, concurrencies=concurrencies, warmup=args.warmup,
                            floor_calls=args.floor_calls, server_options=server_options, repeat=args.repeat,
                            call_timeout=args.call_timeout, log=log)
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    print(format_report(results, command))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"command": command, "environment": environment(), "variants": [r.to_dict() for r in results]}, fh, indent=2)
    return 0
