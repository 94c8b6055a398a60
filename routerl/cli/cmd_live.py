"""``routerl probe`` and ``routerl complete``: live models behind OpenAI-compatible endpoints.

    # probe a model on probe prompts, show its descriptor, append it to a catalog
    routerl probe --endpoint https://api.example.com/v1 --model-name small-1 --api-key-env EXAMPLE_KEY \\
        --id small-1 --input-price 0.2 --output-price 0.8 \\
        --probes ../shared/data/zeroeval.jsonl.gz --split probe --limit 60 \\
        --state small-1.probe.jsonl --catalog configs/catalog/live.yaml

    # or register it with a running server (routerl models probe ... is the same command)
    routerl probe ... --register localhost:50051 --token-env ROUTERL_ADMIN_TOKEN

    # answer a query: route, call, escalate or accept, fall back, within a budget
    routerl complete "What is 17 * 23?" --catalog configs/catalog/live.yaml --max-rounds 2 --budget-usd 0.01
    # the same through a running server (its registry, its providers, its spend ledger)
    routerl complete "What is 17 * 23?" --target localhost:50051 --key-id tenant-a --budget-usd 0.01

Keys are read from the environment variables the endpoints name; they are never printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from contextlib import contextmanager

from routerl.cli import CliError
from routerl.cli.client_args import (
    TARGET_ENV, add_security_args, check_target, check_timeout, client_error, client_options, key_values,
)
from routerl.yaml_numbers import dump_yaml

DEFAULT_ROUTER = "descriptor-score"
MAX_KNOB = 1e9  # the server's bound on a request's knob (routerl.server.requests.MAX_KNOB)
PROBE_DESCRIPTION = ("Run a probe set against an OpenAI-compatible endpoint, score the answers, "
                     "build the model's descriptor (as offline descriptors are built) and register it.")


def register(subparsers) -> None:
    _register_probe(subparsers)
    _register_complete(subparsers)


@contextmanager
def _quiet_http_logs(args: argparse.Namespace):
    """One INFO line per HTTP request drowns the output: silence them (except with ``-v``)
    while the command runs."""
    loggers = [] if getattr(args, "verbose", False) else [logging.getLogger(n) for n in ("httpx", "httpx2", "openai")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# -- routerl probe ----------------------------------------------------------------------------
def _register_probe(subparsers) -> None:
    p = subparsers.add_parser("probe", help="probe a live model and register its descriptor", description=PROBE_DESCRIPTION)
    add_probe_args(p)


def add_probe_args(p: argparse.ArgumentParser) -> None:
    """The arguments of ``routerl probe`` (also ``routerl models probe``); sets ``func``."""
    p.add_argument("--endpoint", required=True, help="OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
    p.add_argument("--model-name", required=True, help="the provider's model name")
    p.add_argument("--api-key-env", default="", help="name of the environment variable holding the key (not the key)")
    p.add_argument("--id", required=True, help="the model's id in the router")
    p.add_argument("--input-price", type=float, required=True, help="USD per million input tokens")
    p.add_argument("--output-price", type=float, required=True, help="USD per million output tokens")
    p.add_argument("--probes", required=True, help="probe set: JSONL(.gz) rows with prompt_id, task, domain, prompt, gold_answer")
    p.add_argument("--split", choices=["train", "probe", "val", "test"], help="keep only prompts of this split")
    p.add_argument("--per-task", type=int, help="probe only the first N prompts of each task")
    p.add_argument("--limit", type=int, help="probe only the first N prompts")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("--state", help="JSONL file of finished probes: a rerun skips them (resume)")
    p.add_argument("--scorer", action="append", metavar="TASK=SCORER", help="override a task's scorer (numeric, choice, exact)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds (default 60)")
    p.add_argument("--retries", type=int, default=3, help="tries per request on 429/5xx (default 3)")
    p.add_argument("--backoff", type=float, default=0.5, help="first retry wait in seconds, doubled per retry (default 0.5)")
    p.add_argument("--max-tokens", type=int, help="cap on answer tokens (>= 1)")
    p.add_argument("--description", default="", help="free text for operators")
    p.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--catalog",
                        help="append the descriptor to this catalog YAML (created if absent; its leading comments are kept)")
    target.add_argument("--register", metavar="TARGET", help="register with a running server (host:port)")
    p.add_argument("--replace", action="store_true",
                   help="replace an entry with the same id in --catalog, or update the model registered with --register")
    p.add_argument("--dry-run", action="store_true", help="probe and show the descriptor; register nothing")
    p.add_argument("--allow-partial", action="store_true", help="register even when some probes failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="show the descriptor as JSON (default YAML)")
    p.add_argument("--full", action="store_true", help="show every probe result too (default: their count)")
    add_security_args(p.add_argument_group("--register security (the token needs the admin role when the server has one)"))
    p.set_defaults(func=run_probe)


def _scorer_overrides(pairs: list[str] | None) -> dict[str, str]:
    from routerl.live.scorers import SCORERS

    out = {}
    for pair in pairs or ():
        task, sep, name = pair.partition("=")
        if not sep or not task or not name:
            raise CliError(f"--scorer expects TASK=SCORER, got {pair!r}")
        if name not in SCORERS:
            raise CliError(f"--scorer {task}: unknown scorer {name!r}; expected one of {', '.join(SCORERS)}")
        out[task] = name
    return out


def _non_negative(flag: str, value: float | None, maximum: float = math.inf) -> None:
    """A CliError naming ``flag`` unless ``value`` is None or a finite number in [0, maximum]."""
    if value is not None and not (math.isfinite(value) and 0 <= value <= maximum):
        bound = "" if maximum == math.inf else f" and at most {maximum:g}"
        raise CliError(f"{flag} must be a finite number >= 0{bound}, got {value:g}")


# descriptor field -> the probe flag that sets it
_PROBE_FIELD_FLAGS = {"id": "--id", "input_price_per_mtok": "--input-price", "output_price_per_mtok": "--output-price",
                      "description": "--description", "tags": "--tag", "endpoint": "--endpoint"}


def _probe_endpoint(args: argparse.Namespace):
    """The endpoint and the descriptor fields the flags give, checked before anything is asked
    (a DescriptorError names the flag): a probe run must not pay for a descriptor it cannot build."""
    from routerl.descriptors.model import DescriptorError, Endpoint, ModelDescriptor

    for flag in ("limit", "per_task", "concurrency", "retries", "max_tokens"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise CliError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    check_timeout(args.timeout, "--timeout")
    _non_negative("--backoff", args.backoff)
    endpoint = Endpoint(base_url=args.endpoint, model_name=args.model_name, api_key_env=args.api_key_env)
    try:
        endpoint.check()  # the rule the server applies at registration
    except DescriptorError as exc:
        flag = {"endpoint.base_url": "--endpoint", "endpoint.model_name": "--model-name"}.get(exc.field, "--api-key-env")
        raise CliError(f"{flag}: {exc.message}") from None
    if args.api_key_env and not os.environ.get(args.api_key_env):
        raise CliError(f"--api-key-env {args.api_key_env}: the environment variable is not set or empty")
    try:
        ModelDescriptor(args.id, args.input_price, args.output_price, description=args.description,
                        tags=tuple(args.tag), endpoint=endpoint)
    except DescriptorError as exc:
        flag = _PROBE_FIELD_FLAGS.get(exc.field.partition(".")[0])
        raise CliError(f"{flag}: {exc}" if flag else str(exc)) from None
    return endpoint


def run_probe(args: argparse.Namespace) -> int:
    from routerl.client import RouterClientError
    from routerl.live.errors import ProviderError

    try:
        with _quiet_http_logs(args):
            return _probe(args)
    except ProviderError as exc:
        raise CliError(str(exc)) from None
    except RouterClientError as exc:
        raise client_error(exc, args.register, getattr(args, "token_env", None)) from None


def _probe(args: argparse.Namespace) -> int:
    from routerl.live.probe import ProbeState, descriptor_from_probes, load_probe_set, run_probes
    from routerl.live.provider import ChatProvider, RetryPolicy
    from routerl.live.register import check_catalog, check_remote, register_in_catalog, register_remote

    if args.register is not None:
        check_target(args.register, "--register")
    if args.catalog is not None and not args.catalog.strip():
        raise CliError("--catalog is empty; give the catalog file to write")
    if not (args.dry_run or args.catalog or args.register):
        raise CliError("say where the descriptor goes: --catalog FILE or --register TARGET (or --dry-run to only show it)")
    # Everything is checked before the first probe is paid for: the flags, the descriptor they
    # give, the probe set, and where the descriptor goes.
    endpoint = _probe_endpoint(args)
    overrides = _scorer_overrides(args.scorer)
    remote_options = client_options(args) if args.register else {}
    if args.catalog and not args.dry_run:
        check_catalog(args.catalog, args.id, replace=args.replace)
    items = load_probe_set(args.probes, split=args.split, limit=args.limit, per_task=args.per_task, scorer_overrides=overrides)
    if args.register and not args.dry_run:
        check_remote(args.register, args.id, replace=args.replace, **remote_options)
    provider = ChatProvider(
        endpoint, input_price_per_mtok=args.input_price, output_price_per_mtok=args.output_price, model_id=args.id,
        timeout_s=args.timeout, retry=RetryPolicy(attempts=args.retries, base_delay_s=args.backoff), max_tokens=args.max_tokens,
    )
    state = ProbeState(args.state, args.model_name) if args.state else None
    try:
        run = run_probes(
            provider, items, concurrency=args.concurrency, state=state, scorer_overrides=overrides,
            show_progress=not args.no_progress,
        )
    finally:
        provider.close()
    spent = sum(r.cost_usd for pid, r in run.records.items()) + run.failed_cost_usd
    print(
        f"probed {len(run.records)}/{len(items)} prompts ({run.resumed} from the state file, {run.asked} asked, "
        f"{len(run.failures)} failed); probe spend ${spent:.4f}",
        file=sys.stderr,
    )
    for pid, reason in sorted(run.failures.items())[:10]:
        print(f"  failed {pid}: {reason}", file=sys.stderr)
    desc = descriptor_from_probes(
        args.id, run.records, input_price_per_mtok=args.input_price, output_price_per_mtok=args.output_price,
        endpoint=endpoint, order=[i.prompt_id for i in items], description=args.description, tags=tuple(args.tag),
    )
    shown = desc.to_dict()
    if not args.full:
        shown["probe_results"] = f"<{len(desc.probe_results)} prompts; --full shows them>"
    print(json.dumps(shown, indent=2) if args.json else dump_yaml({"models": [shown]}, sort_keys=False), end="\n" if args.json else "")
    if run.failures and not args.allow_partial:
        hint = f"rerun to ask them again (finished probes are kept in {args.state})" if args.state else "rerun with --state FILE to keep finished probes"
        print(f"routerl: not registered: {len(run.failures)} probe(s) failed; {hint}, or pass --allow-partial", file=sys.stderr)
        return 1
    if args.dry_run:
        print("dry run: nothing registered", file=sys.stderr)
    elif args.catalog:
        register_in_catalog(desc, args.catalog, replace=args.replace)
        print(f"registered {desc.id} in {args.catalog}", file=sys.stderr)
    else:
        register_remote(args.register, desc, replace=args.replace, **remote_options)
        print(f"registered {desc.id} with {args.register}", file=sys.stderr)
    return 0


# -- routerl complete -------------------------------------------------------------------------
_LOCAL_ONLY = {"router": "--router", "router_option": "--router-option", "data": "--data", "call_timeout": "--call-timeout",
               "retries": "--retries", "backoff": "--backoff", "system": "--system"}
_REMOTE_ONLY = {"deny": "--deny", "key_id": "--key-id", "request_id": "--request-id", "stream": "--stream"}


def _register_complete(subparsers) -> None:
    p = subparsers.add_parser(
        "complete", help="answer a query with routed live models (locally or through a server)",
        description="Route a query over the models, call them through their endpoints (escalating, "
        "falling back, within a budget) and print the answer and every call. With --catalog it runs "
        "here over a catalog's models; with --target (or $ROUTERL_TARGET) a running routerl serve "
        "does it (Complete RPC) over its registry.",
    )
    p.add_argument("query", help="the query text ('-' reads it from stdin)")
    p.add_argument("--catalog", help="local mode: catalog YAML whose models carry endpoints")
    p.add_argument("--target", help=f"server mode: host:port of a running routerl serve (default ${TARGET_ENV} without --catalog)")
    p.add_argument("--models", help="comma-separated ids: restrict the candidates")
    p.add_argument("--router", help=f"local: router name (default {DEFAULT_ROUTER})")
    p.add_argument("--router-option", action="append", metavar="KEY=VALUE", help="local: router option (repeatable)")
    p.add_argument("--data", help="local: outcome table for routers that need one (e.g. knn-probe)")
    knob = p.add_mutually_exclusive_group()
    knob.add_argument("--mode", choices=["quality", "balanced", "cost"], help="cost knob by name (default balanced)")
    knob.add_argument("--knob", type=float, help="cost knob (score points per $ per 1k queries)")
    p.add_argument("--domain", help="the query's domain, when known (e.g. math_grade_school)")
    p.add_argument("--max-rounds", type=int, help="most model-calling rounds (default 2; server: its limit)")
    p.add_argument("--budget-usd", type=float, help="spend cap of this request")
    p.add_argument("--timeout", type=float, default=120.0, help="request time limit in seconds (default 120, at most 86400)")
    p.add_argument("--call-timeout", type=float, help="local: per-call timeout in seconds (default 60)")
    p.add_argument("--retries", type=int, help="local: tries per call on 429/5xx (default 3)")
    p.add_argument("--backoff", type=float, help="local: first retry wait in seconds, doubled per retry (default 0.5)")
    p.add_argument("--system", help="local: system prompt")
    p.add_argument("--deny", action="append", metavar="MODEL_ID", help="server: never these models (repeatable)")
    p.add_argument("--key-id", help="server: the caller key id the spend is accounted to (not a secret)")
    p.add_argument("--request-id", help="server: id echoed in the answer and the server's access log")
    p.add_argument("--stream", action="store_true", help="server: show each model attempt as it happens (CompleteStream)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (with --stream: one JSON object per event)")
    add_security_args(p.add_argument_group("server security"))
    p.set_defaults(func=run_complete)


def build_named_router(name: str, data: str | None, options: dict):
    """A router from the registry (``descriptor-score`` needs no data; others may need ``data``)."""
    from routerl.routers.registry import RouterResources, build_router

    resources = RouterResources()
    if data:
        from routerl.data.outcomes import load_outcomes

        resources.table = load_outcomes(data)
    return build_router(name, resources, **options)


def run_complete(args: argparse.Namespace) -> int:
    from routerl.live.errors import ProviderError

    if args.query == "-":
        args.query = sys.stdin.read()
    if args.catalog and args.target is not None:
        raise CliError("give --catalog FILE (run here) or --target HOST:PORT (ask a server), not both")
    target_flag = "--target"
    if not args.catalog:
        if args.target is None and os.environ.get(TARGET_ENV) is not None:
            target_flag = f"${TARGET_ENV}"
        args.target = args.target if args.target is not None else os.environ.get(TARGET_ENV)
        if args.target is None:
            raise CliError(f"give --catalog FILE (run here) or --target HOST:PORT (ask a server; or set ${TARGET_ENV})")
        check_target(args.target, target_flag)
    mode_only, other = (_LOCAL_ONLY, "--target") if args.target else (_REMOTE_ONLY, "--catalog")
    for dest, flag in mode_only.items():
        if getattr(args, dest) not in (None, False):
            raise CliError(f"{flag} does not apply with {other}")
    _check_complete_flags(args)
    if args.target:
        return _complete_remote(args)
    try:
        with _quiet_http_logs(args):
            return _complete(args)
    except ProviderError as exc:
        raise CliError(str(exc)) from None


def _check_complete_flags(args: argparse.Namespace) -> None:
    """Checks of ``complete``'s flags, before any model (or server) is called; errors name the flag."""
    if not args.query.strip():
        raise CliError("the query is empty")
    if args.max_rounds is not None and args.max_rounds < 1:
        raise CliError(f"--max-rounds must be >= 1, got {args.max_rounds}")
    if args.models is not None and not [m for m in args.models.split(",") if m.strip()]:
        raise CliError("--models lists no model id")
    _non_negative("--knob", args.knob, MAX_KNOB)
    _non_negative("--budget-usd", args.budget_usd)
    check_timeout(args.timeout, "--timeout")
    if args.target:
        return
    check_timeout(args.call_timeout, "--call-timeout")
    if args.retries is not None and args.retries < 1:
        raise CliError(f"--retries must be >= 1, got {args.retries}")
    _non_negative("--backoff", args.backoff)


def _report(answer: str | None, stop: str, message: str, calls: list[dict], thinks: list[str], total: float) -> None:
    """The text report: the answer on stdout; why it stopped, each call, think and total on stderr."""
    print(answer if answer is not None else "(no answer)")
    print(f"\n-- {stop}: {message}", file=sys.stderr)
    for c in calls:
        _report_call(c)
    for n, think in enumerate(thinks, start=1):
        if think:
            print(f"   think {n}: {think}", file=sys.stderr)
    print(f"   total ${total:.6f}", file=sys.stderr)


def _report_call(c: dict) -> None:
    ok = c["status"] == "ok"
    detail = f"{c['latency_ms']:.0f} ms, {c['prompt_tokens']}+{c['completion_tokens']} tok, ${c['cost_usd']:.6f}" if ok else c["reason"]
    print(f"   round {c['round']} {c['model_id']}: {c['status']}{' (fallback)' if c['fallback'] else ''} {detail}", file=sys.stderr)


def _complete_remote(args: argparse.Namespace) -> int:
    from routerl.client import CompleteResult, RouterClient, RouterClientError

    options = client_options(args)
    request = dict(
        mode=args.mode, knob=args.knob, domain=args.domain, max_rounds=args.max_rounds, budget_usd=args.budget_usd,
        key_id=args.key_id, request_id=args.request_id, deny=args.deny or (),
        allow=[m.strip() for m in args.models.split(",") if m.strip()] if args.models else (),
    )  # fmt: skip
    try:
        with RouterClient(args.target, timeout=args.timeout, **options) as client:
            if not args.stream:
                result = client.complete(args.query, timeout=args.timeout, **request)
            else:
                result = None
                for event in client.complete_stream(args.query, timeout=args.timeout, **request):
                    if args.json:
                        kind = "result" if isinstance(event, CompleteResult) else "attempt"
                        print(json.dumps({kind: event.to_dict()}), flush=True)
                    elif not isinstance(event, CompleteResult):
                        _report_call(event.to_dict())
                    if isinstance(event, CompleteResult):
                        result = event
                if args.json:
                    return 0
                if result is None:
                    raise CliError(f"the stream from {args.target} ended without a result")
    except RouterClientError as exc:
        raise client_error(exc, args.target, options["token_env"]) from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    calls = [] if args.stream else [a.to_dict() for a in result.attempts]  # streamed ones are shown already
    _report(result.answer, result.stop, result.message, calls, result.think.split("\n") if result.think else [],
            result.total_cost_usd)
    print(f"   model {result.model_id}, router {result.router}, key {result.key_id}, request {result.request_id}",
          file=sys.stderr)
    return 0


def _complete(args: argparse.Namespace) -> int:
    from routerl.descriptors.catalog import load_catalog

    from routerl.live.executor import Executor
    from routerl.live.provider import RetryPolicy
    from routerl.routers.base import Query, knob_for_mode

    models = load_catalog(args.catalog)
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = sorted(set(wanted) - {m.id for m in models})
        if unknown:
            raise CliError(f"--models: not in {args.catalog}: {', '.join(unknown)}")
        models = [m for m in models if m.id in wanted]
    if not any(m.endpoint for m in models):
        raise CliError(f"{args.catalog}: no model has an 'endpoint'; probe one with `routerl probe` first")
    router = build_named_router(args.router or DEFAULT_ROUTER, args.data, key_values(args.router_option, "--router-option"))
    retry = RetryPolicy(attempts=3 if args.retries is None else args.retries,
                        base_delay_s=0.5 if args.backoff is None else args.backoff)
    call_timeout = 60.0 if args.call_timeout is None else args.call_timeout
    executor = Executor.from_descriptors(
        router, models, provider_options={"timeout_s": call_timeout, "retry": retry},
        max_rounds=args.max_rounds or 2, budget_usd=args.budget_usd, timeout_s=args.timeout, system_prompt=args.system,
    )
    knob = args.knob if args.knob is not None else knob_for_mode(args.mode or "balanced")
    result = executor.complete(Query(text=args.query, domain=args.domain), models, knob)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        calls = [dict(vars(c)) for c in result.calls]
        _report(result.answer, result.stop, result.message, calls, result.think, result.total_cost_usd)
    return 0 if result.ok else 1
