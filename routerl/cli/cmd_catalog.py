"""``routerl catalog build``: a catalog YAML of model descriptors from an outcome table's probe split.

    routerl catalog build --data ../shared/data/zeroeval.jsonl.gz \\
        --models gpt-4o-2024-08-06,gpt-4o-mini-2024-07-18 \\
        --extra configs/catalog/model_info.yaml --out configs/catalog/default.yaml

Per model: prices, per-domain sample scores and counts and the mean answer length, from probe rows
only (``routerl.descriptors.build_descriptors``); per-probe results (``probe prompt id -> score``,
the per-query evidence of ``knn-probe`` and of the shipped policy's shortlist) are kept with
``--probe-results`` and left out otherwise, to keep the file small. ``--extra`` merges fields the data does not hold (context window, latency, description,
tags, endpoint) from a YAML mapping ``{model_id: {field: value}}``. The command that built a
catalog is written in its header, so it can be rebuilt.
"""

from __future__ import annotations

import argparse
import shlex

from routerl.cli import CliError
from routerl.cli.output_paths import output_file
from routerl.descriptors.catalog import CATALOG_VERSION, parse_catalog
from routerl.descriptors.model import ModelDescriptor
from routerl.text_files import write_text_atomically
from routerl.yaml_numbers import dump_yaml, read_yaml_file

EXTRA_FIELDS = ("latency_ms", "context_window", "description", "tags", "endpoint")


def register(subparsers) -> None:
    p = subparsers.add_parser("catalog", help="build model catalogs", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build a catalog from an outcome table's probe split")
    build.add_argument("--data", required=True, help="outcome table (.jsonl or .jsonl.gz)")
    build.add_argument("--models", required=True, help="comma-separated model ids, in catalog order")
    build.add_argument("--extra", help="YAML {model_id: {context_window, latency_ms, description, tags, endpoint}}")
    build.add_argument("--out", required=True, help="catalog YAML to write")
    build.add_argument("--probe-results", action="store_true",
                       help="keep each model's per-probe-prompt results (per-query evidence for knn-probe and the policy)")
    build.set_defaults(func=run_build)


def load_extra(path: str | None) -> dict[str, dict]:
    if not path:
        return {}
    raw = read_yaml_file(path, "extra model info") or {}
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise CliError(f"{path}: expected a mapping of model id -> {{field: value}}")
    for model_id, fields in raw.items():
        bad = sorted(set(fields) - set(EXTRA_FIELDS))
        if bad:
            raise CliError(f"{path}: {model_id}: field '{bad[0]}' cannot be set here (allowed: {', '.join(EXTRA_FIELDS)})")
    return raw


def build_catalog(data: str, models: list[str], extra: dict[str, dict], probe_results: bool = False) -> list[ModelDescriptor]:
    """Descriptors of ``models`` from ``data``'s probe split (per-probe results only with
    ``probe_results``), merged with ``extra``."""
    from routerl.data import load_outcomes
    from routerl.descriptors.build import build_descriptors

    table = load_outcomes(data)
    missing = [m for m in models if not table.has_model(m)]
    if missing:
        raise CliError(f"{data}: no rows for model(s) {', '.join(missing)}")
    unknown = sorted(set(extra) - set(models))
    if unknown:
        raise CliError(f"--extra names models not in --models: {', '.join(unknown)}")
    built = build_descriptors(table, models)
    entries = []
    for model_id in models:
        entry = built[model_id].to_dict()
        if not probe_results:
            entry.pop("probe_results", None)
        entry.update(extra.get(model_id, {}))
        entries.append(entry)
    return parse_catalog({"version": CATALOG_VERSION, "models": entries}, "built catalog")


def catalog_text(models: list[ModelDescriptor], command: list[str]) -> str:
    """The catalog YAML, with a header giving the command (its parts, one per line) that built it."""
    entries = []
    for desc in models:
        entry = desc.to_dict()
        if not entry.get("probe_results"):
            entry.pop("probe_results", None)
        entries.append(entry)
    header = (
        "# routerl model catalog: descriptors built from the probe split of the outcome table.\n"
        "# Seeds a new registry database (routerl serve --catalog ...). Rebuild with:\n#   "
        + " \\\n#     ".join(command) + "\n"
    )
    return header + dump_yaml({"version": CATALOG_VERSION, "models": entries}, sort_keys=False, width=120)


def run_build(args: argparse.Namespace) -> int:
    output_file(args.out, "--out")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise CliError("--models lists no model")
    if len(set(models)) != len(models):
        raise CliError("--models lists a model twice")
    catalog = build_catalog(args.data, models, load_extra(args.extra), args.probe_results)
    command = ["routerl catalog build"] + [
        f"--{name} {shlex.quote(str(value))}"
        for name, value in (("data", args.data), ("models", ",".join(models)), ("extra", args.extra), ("out", args.out))
        if value
    ] + (["--probe-results"] if args.probe_results else [])
    write_text_atomically(args.out, catalog_text(catalog, command))
    print(f"wrote {args.out}: {len(catalog)} models")
    return 0
