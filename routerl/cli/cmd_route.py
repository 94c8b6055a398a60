"""``routerl route "QUERY"``: ask a running server which model should answer.

    routerl route "What is 17 * 23?" --mode cost
    routerl route "Prove that ..." --knob 0.05 --allow gpt-4o-2024-08-06 --allow o1-mini-2024-09-12
    routerl route "..." --deny claude-3-haiku-20240307 --max-est-cost 0.01 --json

Prints the chosen model id on the first line, then the ranked fallbacks (or JSON with --json).
"""

from __future__ import annotations

import argparse
import json

from routerl.cli import CliError
from routerl.cli.client_args import add_client_args, connect


def register(subparsers) -> None:
    p = subparsers.add_parser("route", help="route a query through a running server", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("query", help="the query text ('-' reads it from stdin)")
    cost = p.add_mutually_exclusive_group()
    cost.add_argument("--mode", choices=["quality", "balanced", "cost"], help="a named cost trade-off")
    cost.add_argument("--knob", type=float, help="score points per USD per 1,000 queries (>= 0)")
    p.add_argument("--allow", action="append", default=[], metavar="MODEL_ID", help="only these models (repeatable)")
    p.add_argument("--deny", action="append", default=[], metavar="MODEL_ID", help="never these models (repeatable)")
    p.add_argument("--max-input-price", type=float, help="hard limit: USD per million input tokens")
    p.add_argument("--max-output-price", type=float, help="hard limit: USD per million output tokens")
    p.add_argument("--max-est-cost", type=float, help="hard limit: estimated USD per call")
    p.add_argument("--min-context", type=int, help="hard limit: context window in tokens")
    p.add_argument("--domain", help="domain hint, e.g. math_grade_school")
    p.add_argument("--think-budget", type=int, default=0, help="tokens of reasoning the router may spend")
    p.add_argument("--attempt", action="append", default=[], metavar="MODEL_ID=RESPONSE",
                   help="a previous attempt of this request, oldest first (repeatable); MODEL_ID must be "
                        "registered and not in --deny")
    p.add_argument("--request-id", help="id echoed in the answer")
    add_client_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    query = sys.stdin.read() if args.query == "-" else args.query
    attempts = []
    for pair in args.attempt:
        model_id, sep, response = pair.partition("=")
        if not sep or not model_id:
            raise CliError(f"--attempt expects MODEL_ID=RESPONSE, got {pair!r}")
        attempts.append((model_id, response))
    if args.think_budget < 0:
        raise CliError("--think-budget must be >= 0")
    if attempts:  # the router may accept the last attempt's answer: it must be from a model the request allows
        model_id = attempts[-1][0]
        if model_id in args.deny or (args.allow and model_id not in args.allow):
            where = "also in --deny" if model_id in args.deny else "not in --allow"
            raise CliError(f"--attempt {model_id}: the last attempt's model is {where} (its answer could be accepted); "
                           "leave out one of the two")
    with connect(args) as client:
        result = client.route(
            query,
            mode=args.mode,
            knob=args.knob,
            allow=args.allow,
            deny=args.deny,
            max_input_price_per_mtok=args.max_input_price,
            max_output_price_per_mtok=args.max_output_price,
            max_est_cost_usd=args.max_est_cost,
            min_context_window=args.min_context,
            think_budget=args.think_budget,
            attempts=attempts,
            domain=args.domain,
            request_id=args.request_id,
        )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(result.model_id)
    print(f"  action {result.action}, est ${result.est_cost_usd:.6f}, knob {result.knob:g}, "
          f"router {result.router}, registry v{result.registry_version}, request {result.request_id}")
    for n, (model_id, prob) in enumerate(result.ranking, start=1):
        print(f"  {n:>2}. {model_id:<40} p={prob:.3f}")
    if result.think:
        print("  think: " + result.think.replace("\n", "\n         "))
    return 0

