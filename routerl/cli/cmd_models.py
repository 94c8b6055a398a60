"""``routerl models``: manage the model registry of a running server.

    routerl models list
    routerl models get gpt-4o-mini-2024-07-18 --json
    routerl models add my-model --input-price 0.2 --output-price 0.8 --score math_grade_school=0.91 --tag local
    routerl models add --file new_models.yaml          # the catalog format (version: 1, models: [...]);
                                                       # all or nothing: an id already registered stops it
    routerl models update my-model --input-price 0.1   # only the fields given; the rest is kept
    routerl models update my-model --score math=0.8    # that domain only; the other domains are kept
    routerl models update my-model --add-tag beta      # --tag replaces all tags, --add-tag/--remove-tag edit them
    routerl models update --file new_models.yaml      # replace whole descriptors (all must be registered)
                                                       # (flags merge into what is stored: read with its etag,
                                                       # merged, written; read again if another client wrote)
    routerl models remove my-model
    routerl models probe --endpoint URL --model-name NAME --id my-model --input-price 0.2 --output-price 0.8 \
        --probes ../shared/data/zeroeval.jsonl.gz --split probe --per-task 20 --register localhost:50051
                                                       # the same as `routerl probe` (see routerl.cli.cmd_live)
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from routerl.cli import CliError
from routerl.cli.client_args import add_client_args, client_error, connect, key_values
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
UPDATE_TRIES = 5  # read-merge-write rounds of `models update` flags when others write the same model

_ENDPOINT_FLAGS = {"base_url": "--base-url", "model_name": "--model-name", "api_key_env": "--api-key-env"}
# descriptor field -> the flag(s) that set it, for errors
_FIELD_FLAGS = {
    **{field: "--" + dest.replace("_", "-") for dest, field in _SCALAR_FLAGS.items()},
    "id": "the model id", "sample_scores": "--score", "sample_counts": "--count", "tags": "--tag",
    "endpoint": "/".join(_ENDPOINT_FLAGS.values()),
}


def _descriptor_flags(p: argparse.ArgumentParser, update: bool = False) -> None:
    if update:
        p.add_argument("--file", help="YAML file in the catalog format (instead of the flags): replaces each "
                                      "listed model's whole descriptor; every id must be registered, else nothing changes")
    else:
        p.add_argument("--file", help="YAML file in the catalog format (instead of the flags): all or nothing, "
                                      "when an id is already registered nothing is registered")
    p.add_argument("--input-price", type=float, help="USD per million input tokens")
    p.add_argument("--output-price", type=float, help="USD per million output tokens")
    p.add_argument("--latency-ms", type=float, help="typical latency of a full answer")
    p.add_argument("--context-window", type=int, help="context window in tokens")
    p.add_argument("--mean-output-tokens", type=float, help="typical answer length in tokens")
    kept = "; the other stored domains are kept" if update else ""
    p.add_argument("--score", action="append", metavar="DOMAIN=SCORE",
                   help=f"sample score in [0, 1] of a domain (repeatable{kept})")
    p.add_argument("--count", action="append", metavar="DOMAIN=N",
                   help=f"probe prompts behind a domain's score (repeatable{kept})")
    p.add_argument("--description", help="free text")
    if update:
        p.add_argument("--tag", action="append", help="tag (repeatable): replaces all stored tags")
        p.add_argument("--add-tag", action="append", metavar="TAG", help="add a tag, keeping the stored ones (repeatable)")
        p.add_argument("--remove-tag", action="append", metavar="TAG", help="remove a stored tag (repeatable)")
    else:
        p.add_argument("--tag", action="append", help="tag (repeatable)")
    given = " (the endpoint's other parts are kept)" if update else ""
    p.add_argument("--base-url", help=f"endpoint: OpenAI-compatible base URL{given}")
    p.add_argument("--model-name", help=f"endpoint: the provider's model name{given}")
    p.add_argument("--api-key-env", help=f"endpoint: environment variable holding the API key{given}")


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
    _descriptor_flags(upd, update=True)
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


def _flags_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, dest) is not None for dest in (*_SCALAR_FLAGS, *_ENDPOINT_FLAGS)) or any(
        getattr(args, dest, None) for dest in ("score", "count", "tag", "add_tag", "remove_tag"))


def _flag_changes(args: argparse.Namespace, current: ModelDescriptor | None = None) -> dict:
    """Descriptor fields set by flags (only those given). With ``current`` (an update), ``--score``
    and ``--count`` change only the domains they name, ``--add-tag``/``--remove-tag`` edit the
    stored tags and the endpoint flags only their part of the stored endpoint."""
    changes = {field: getattr(args, dest) for dest, field in _SCALAR_FLAGS.items() if getattr(args, dest) is not None}
    if args.score:
        scores = key_values(args.score, "--score", float)
        changes["sample_scores"] = {**current.sample_scores, **scores} if current else scores
    if args.count:
        counts = key_values(args.count, "--count", int)
        changes["sample_counts"] = {**current.sample_counts, **counts} if current else counts
    add_tags, remove_tags = getattr(args, "add_tag", None) or [], getattr(args, "remove_tag", None) or []
    if args.tag or add_tags or remove_tags:
        tags = list(args.tag) if args.tag else list(current.tags if current else ())
        tags += [t for t in dict.fromkeys(add_tags) if t not in tags]
        for tag in remove_tags:
            if tag not in tags:
                raise CliError(f"--remove-tag {tag}: the model has no such tag (tags: {', '.join(tags) or 'none'})")
            tags.remove(tag)
        changes["tags"] = tuple(tags)
    given = {part: getattr(args, part) for part in _ENDPOINT_FLAGS if getattr(args, part) is not None}
    if given:
        endpoint = replace((current.endpoint if current else None) or Endpoint(), **given)
        try:
            endpoint.check()  # the rule the server applies at registration
        except DescriptorError as exc:
            part = exc.field.partition(".")[2]
            hint = "" if part in given else f" (the model has no {part} yet: give {_ENDPOINT_FLAGS[part]})"
            raise CliError(f"{_ENDPOINT_FLAGS[part]}: {exc.message}{hint}") from None
        changes["endpoint"] = endpoint
    return changes


def _descriptor_error(action: str, exc: DescriptorError) -> CliError:
    """The error of an invalid descriptor, naming the flag that set the field."""
    field, _, key = exc.field.partition(".")
    flag = _FIELD_FLAGS.get(field)
    return CliError(f"models {action}: {flag}{' ' + key if key else ''}: {exc}" if flag else f"models {action}: {exc}")


def _models_from(args: argparse.Namespace, action: str) -> list[ModelDescriptor]:
    if args.file:
        if args.id or _flags_given(args):
            raise CliError(f"models {action}: give either --file or a model id with flags, not both")
        models = load_catalog(args.file)
        if not models:
            raise CliError(f"models {action}: {args.file} lists no model")
        return models
    if not args.id:
        raise CliError(f"models {action}: give a model id with flags, or --file")
    return []


def _each(client, args: argparse.Namespace, models: list[ModelDescriptor], done_word: str, call) -> None:
    """``call(desc)`` for each model in order; a failure says which were done and which were not."""
    from routerl.client import RouterClientError

    done: list[str] = []
    for desc in models:
        try:
            call(desc)
        except RouterClientError as exc:
            error = client_error(exc, args.target, getattr(args, "token_env", None))
            left = [d.id for d in models[len(done):]]
            raise CliError(f"{error}; {done_word} before it: {', '.join(done) or 'none'}; "
                           f"not {done_word}: {', '.join(left)}") from None
        done.append(desc.id)
        print(f"{done_word} {desc.id}")


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
            raise _descriptor_error("add", exc) from None
    with connect(args) as client:
        if args.file:  # all or nothing: no model is registered when one of them already is
            registered = {m.id for m in client.list_models(omit_probe_results=True)}
            taken = [d.id for d in models if d.id in registered]
            if taken:
                raise CliError(f"models add: {args.file}: already registered with {args.target}: {', '.join(taken)}; "
                               "nothing registered (replace them with `models update --file`, or leave them out)")
        _each(client, args, models, "registered", client.register_model)
    return 0


def run_update(args: argparse.Namespace) -> int:
    import grpc

    from routerl.client import RouterClientError

    models = _models_from(args, "update")
    if not models:
        if not _flags_given(args):
            raise CliError("models update: no field to change (give flags such as --input-price, or --file)")
        key_values(args.score, "--score", float)  # malformed flags fail before any call
        key_values(args.count, "--count", int)
    with connect(args) as client:
        if models:  # every model must be registered before any is replaced
            registered = {m.id for m in client.list_models(omit_probe_results=True)}
            missing = [d.id for d in models if d.id not in registered]
            if missing:
                raise CliError(f"models update: {args.file}: not registered with {args.target}: {', '.join(missing)}; "
                               "nothing updated (register them with `models add --file`)")
            _each(client, args, models, "updated", client.update_model)
            return 0
        # Flags such as --score d=x or --add-tag merge into the stored value: read, merge, write
        # against the read's etag, and start over when another client changed the model between.
        for attempt in range(UPDATE_TRIES):
            current, etag = client.read_model(args.id)
            changes = _flag_changes(args, current)
            try:
                desc = current.with_changes(**changes)
            except DescriptorError as exc:
                raise _descriptor_error("update", exc) from None
            try:
                updated = client.update_model(desc, fields=sorted(changes), etag=etag)
                break
            except RouterClientError as exc:
                if exc.code != grpc.StatusCode.ABORTED or attempt == UPDATE_TRIES - 1:
                    raise
        print(f"updated {updated.id}: {', '.join(sorted(changes))}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    with connect(args) as client:
        version = client.remove_model(args.id)
    print(f"removed {args.id} (registry v{version})")
    return 0
