"""``routerl models``: manage the model registry of a running server.

    routerl models list
    routerl models get gpt-4o-mini-2024-07-18 --json
    routerl models add my-model --input-price 0.2 --output-price 0.8 --score math_grade_school=0.91 --tag local
    routerl models add --file new_models.yaml          # the catalog format (version: 1, models: [...])
    routerl models update my-model --input-price 0.1   # only the fields given
    routerl models update --file new_models.yaml      # replace whole descriptors
    routerl models remove my-model
    routerl models probe --endpoint URL --model-name NAME --id my-model --input-price 0.2 --output-price 0.8 \
        --probes ../shared/data/zeroeval.jsonl.gz --split probe --per-task 20 --register localhost:50051
                                                       # the same as `routerl probe` (see routerl.cli.cmd_live)
"""

from __future__ import annotations

import argparse
import json

from routerl.cli import CliError
from routerl.cli.client_args import add_client_args, connect, key_values
from routerl.descriptors.catalog import load_catalog
from routerl.descriptors.model import DescriptorError, Endpoint, ModelDescriptor
from routerl.yaml_numbers import dump_yaml

# flag dest -> descriptor field, for add/update from flags
_SCALAR_FLAGS = {
    "input_price": "input_price_per_mtok",
    "output_price": "output_price_per_mtok",
    "latency_ms": "latency_ms",
    "context_window": "context_window",
    "mean_output_tokens": "mean_output_tokens",
    "description": "description",
}


def _descriptor_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", help="YAML file in the catalog format (instead of the flags)")
    p.add_argument("--input-price", type=float, help="USD per million input tokens")
    p.add_argument("--output-price", type=float, help="USD per million output tokens")
    p.add_argument("--latency-ms", type=float, help="typical latency of a full answer")
    p.add_argument("--context-window", type=int, help="context window in tokens")
    p.add_argument("--mean-output-tokens", type=float, help="typical answer length in tokens")
    p.add_argument("--score", action="append", metavar="DOMAIN=SCORE", help="sample score in [0, 1] (repeatable)")
    p.add_argument("--count", action="append", metavar="DOMAIN=N", help="probe prompts behind a score (repeatable)")
    p.add_argument("--description", help="free text")
    p.add_argument("--tag", action="append", help="tag (repeatable)")
    p.add_argument("--base-url", help="endpoint: OpenAI-compatible base URL")
    p.add_argument("--model-name", help="endpoint: the provider's model name")
    p.add_argument("--api-key-env", help="endpoint: environment variable holding the API key")


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="manage the model registry of a running server", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    ls = sub.add_parser("list", help="list registered models")
    add_client_args(ls)
    ls.set_defaults(func=run_list)

    get = sub.add_parser("get", help="show one model's descriptor")
    get.add_argument("id")
    add_client_args(get)
    get.set_defaults(func=run_get)

    add = sub.add_parser("add", help="register models (from flags or --file)")
    add.add_argument("id", nargs="?", help="model id (with flags)")
    _descriptor_flags(add)
    add_client_args(add)
    add.set_defaults(func=run_add)

    upd = sub.add_parser("update", help="change a model (the given flags) or replace models (--file)")
    upd.add_argument("id", nargs="?", help="model id (with flags)")
    _descriptor_flags(upd)
    add_client_args(upd)
    upd.set_defaults(func=run_update)

    rm = sub.add_parser("remove", help="remove a model")
    rm.add_argument("id")
    add_client_args(rm)
    rm.set_defaults(func=run_remove)

    from routerl.cli.cmd_live import PROBE_DESCRIPTION, add_probe_args

    probe = sub.add_parser("probe", help="probe a live model and register its descriptor (= routerl probe)",
                           description=PROBE_DESCRIPTION + " The same command as `routerl probe`.")
    add_probe_args(probe)


def _flag_changes(args: argparse.Namespace) -> dict:
    """Descriptor fields set by flags (only those given)."""
    changes = {field: getattr(args, dest) for dest, field in _SCALAR_FLAGS.items() if getattr(args, dest) is not None}
    if args.score:
        changes["sample_scores"] = key_values(args.score, "--score", float)
    if args.count:
        changes["sample_counts"] = key_values(args.count, "--count", int)
    if args.tag:
        changes["tags"] = tuple(args.tag)
    if any(v is not None for v in (args.base_url, args.model_name, args.api_key_env)):
        changes["endpoint"] = Endpoint(args.base_url or "", args.model_name or "", args.api_key_env or "")
    return changes


def _models_from(args: argparse.Namespace, action: str) -> list[ModelDescriptor]:
    if args.file:
        if args.id or _flag_changes(args):
            raise CliError(f"models {action}: give either --file or a model id with flags, not both")
        return load_catalog(args.file)
    if not args.id:
        raise CliError(f"models {action}: give a model id with flags, or --file")
    return []


def _show(desc: ModelDescriptor, as_json: bool) -> None:
    if as_json:
        print(json.dumps(desc.to_dict(), indent=2))
    else:
        print(dump_yaml(desc.to_dict(), sort_keys=False).rstrip())


def run_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        models = client.list_models(omit_probe_results=not args.json)
    if args.json:
        print(json.dumps([m.to_dict() for m in models], indent=2))
        return 0
    print(f"{'id':<40} {'in $/Mtok':>9} {'out $/Mtok':>10} {'context':>9} {'score':>6}  domains")
    for m in models:
        overall = m.overall_score()
        domains = ", ".join(f"{d} {s:.2f}" for d, s in sorted(m.sample_scores.items()))
        print(f"{m.id:<40} {m.input_price_per_mtok:>9g} {m.output_price_per_mtok:>10g} {m.context_window or '-':>9} "
              f"{'-' if overall is None else f'{overall:.2f}':>6}  {domains}")
    print(f"{len(models)} models")
    return 0


def run_get(args: argparse.Namespace) -> int:
    with connect(args) as client:
        _show(client.get_model(args.id), args.json)
    return 0


def run_add(args: argparse.Namespace) -> int:
    models = _models_from(args, "add")
    if not models:
        changes = _flag_changes(args)
        for required, flag in (("input_price_per_mtok", "--input-price"), ("output_price_per_mtok", "--output-price")):
            if required not in changes:
                raise CliError(f"models add: {flag} is required")
        try:
            models = [ModelDescriptor(id=args.id, **changes)]
        except DescriptorError as exc:
            raise CliError(f"models add: {exc}") from None
    with connect(args) as client:
        for desc in models:
            client.register_model(desc)
            print(f"registered {desc.id}")
    return 0


def run_update(args: argparse.Namespace) -> int:
    models = _models_from(args, "update")
    with connect(args) as client:
        if models:
            for desc in models:
                client.update_model(desc)
                print(f"updated {desc.id}")
            return 0
        changes = _flag_changes(args)
        if not changes:
            raise CliError("models update: no field to change (give flags such as --input-price, or --file)")
        current = client.get_model(args.id)
        if "sample_scores" in changes and "sample_counts" not in changes:
            changes["sample_counts"] = {d: n for d, n in current.sample_counts.items() if d in changes["sample_scores"]}
        try:
            desc = current.with_changes(**changes)
        except DescriptorError as exc:
            raise CliError(f"models update: {exc}") from None
        updated = client.update_model(desc, fields=sorted(changes))
        print(f"updated {updated.id}: {', '.join(sorted(changes))}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    with connect(args) as client:
        version = client.remove_model(args.id)
    print(f"removed {args.id} (registry v{version})")
    return 0
