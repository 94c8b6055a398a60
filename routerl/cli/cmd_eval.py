"""``routerl eval``: run routers over recorded test prompts and report the protocol's metrics.

    routerl eval --data ../shared/data/zeroeval.jsonl.gz --data ../shared/data/mmlupro.jsonl.gz \\
        --splits ../shared/data/splits.json --router all --pools seen,full --shuffle-control --out runs/eval

writes ``OUT/decisions.jsonl`` (the protocol's decision rows), ``OUT/decisions_shuffled.jsonl``
(with ``--shuffle-control``: full-pool rows with unseen descriptors permuted), ``OUT/metrics.json``
and ``OUT/curves.png``, and prints the metric tables. With no ``--data`` it evaluates on the
default synthetic world. ``--from-decisions`` recomputes metrics and plot from an earlier run.

Routers: comma-separated names (``all`` = every baseline and ``learned``), each optionally with
options ``name:key=value:key=value`` (e.g. ``knn-probe:k=5``), or a policy checkpoint path.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import time
from pathlib import Path

from routerl.cli import CliError
from routerl.cli.output_paths import output_dir
from routerl.eval.unseen_evidence import UNSEEN_EVIDENCE

log = logging.getLogger(__name__)

ALL_ROUTERS = ("random", "cheapest", "best-single", "oracle", "knn-probe", "cluster-probe", "learned")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate routers on recorded outcomes (decisions, metrics, curves)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", action="append", default=[], metavar="TABLE",
                   help="an outcome table (.jsonl/.jsonl.gz); repeat for several datasets; none = synthetic world")
    p.add_argument("--splits", metavar="SPLITS", help="splits.json (seen/unseen models); none = every model seen")
    p.add_argument("--router", default="all", metavar="NAMES_OR_CHECKPOINT",
                   help="comma-separated router names with optional :key=value options, 'all', or a policy checkpoint path")
    p.add_argument("--pools", default="seen,full", help="comma-separated pools: seen, full (default both)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--knobs", help="comma-separated cost knobs (default: 0 and 10^-3..10^3, 3 per decade)")
    p.add_argument("--limit", type=int, help="evaluate only the first N prompts of the split per dataset")
    p.add_argument("--sample", type=int, help="evaluate a seeded random sample of N prompts of the split per dataset (every router sees the same ones)")
    p.add_argument("--split", default="test", choices=("test", "val"), help="prompts to evaluate (val: for choosing options)")
    p.add_argument("--embedder", default="minilm", choices=("minilm", "hash"), help="sentence embedder (default minilm)")
    p.add_argument("--shuffle-control", action="store_true", help="also run the full pool with unseen descriptors shuffled")
    p.add_argument("--unseen-evidence", default="probe", choices=UNSEEN_EVIDENCE,
                   help="what unseen models' descriptors carry: probe (sample scores and per-prompt probe results, the protocol's) "
                        "or sample-scores (per-domain sample scores only, as a model registered without a probe run)")
    p.add_argument("--seed", type=int, default=0, help="seed of random routers, k-means and the shuffle (default 0)")
    p.add_argument("--cache-dir", help="cache directory (default $ROUTERL_CACHE_DIR or ~/.cache/routerl)")
    p.add_argument("--from-decisions", metavar="PATH",
                   help="skip routing: recompute metrics and curves from a decisions file or an earlier --out directory")
    p.set_defaults(func=run)


def parse_knobs(text: str | None) -> list[float]:
    from routerl.eval.runner import DEFAULT_KNOBS

    if not text:
        return list(DEFAULT_KNOBS)
    knobs = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise CliError(f"--knobs: {part!r} is not a number") from None
        if not value >= 0 or value == float("inf"):
            raise CliError(f"--knobs: knob values must be finite and >= 0, got {part!r}")
        knobs.append(value)
    return sorted(set(knobs))


def parse_router_specs(text: str) -> list[tuple[str, str, dict[str, str]]]:
    """``[(label, name, options)]`` from ``name[:k=v...],...``; a path-like entry is a checkpoint
    (name ``""``, label the path)."""
    specs = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        if part == "all":
            specs += [(n, n, {}) for n in ALL_ROUTERS]
            continue
        if "/" in part or "\\" in part or Path(part).exists():
            specs.append((part, "", {}))
            continue
        name, *opts = part.split(":")
        options = {}
        for opt in opts:
            key, sep, value = opt.partition("=")
            if not sep or not key:
                raise CliError(f"--router: option {opt!r} of {name!r} must look like key=value")
            options[key] = value
        specs.append((part, name, options))
    if not specs:
        raise CliError("--router: no router given")
    labels = [s[0] for s in specs]
    if len(set(labels)) != len(labels):
        raise CliError(f"--router: a router is named twice ({', '.join(labels)})")
    return specs


def load_checkpoint_router(path: str, resources):
    """The hook for trained policies: ``routerl.policy.router.load_policy_router(path)``."""
    if not Path(path).exists():
        raise CliError(f"--router: {path!r} is neither a known router name nor an existing checkpoint path")
    try:
        module = importlib.import_module("routerl.policy.router")
    except ImportError:
        raise CliError(f"--router: {path!r} looks like a policy checkpoint, but routerl.policy.router is not available") from None
    loader = getattr(module, "load_policy_router", None)
    if loader is None:
        raise CliError("--router: routerl.policy.router has no load_policy_router(path)")
    try:
        if "resources" in inspect.signature(loader).parameters:
            return loader(path, resources=resources)
        return loader(path)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CliError(f"--router: cannot load the policy checkpoint {path}: {exc}") from None


def _router_names() -> list[str]:
    from routerl.routers.registry import router_names

    return router_names()


def _load_tables(args):
    """``(tables, splits)``: the --data tables, or the synthetic world."""
    from routerl.data import Splits, load_outcomes
    from routerl.data.synthetic import SyntheticWorld

    if not args.data:
        if args.splits:
            raise CliError("--splits needs --data (without --data the synthetic world brings its own splits)")
        table, splits, _ = SyntheticWorld().build()
        return {table.name: table}, splits
    splits = Splits.load(args.splits) if args.splits else None
    tables = {}
    for path in args.data:
        table = load_outcomes(path)
        if table.name in tables:
            raise CliError(f"--data: dataset {table.name!r} given twice")
        tables[table.name] = table
    if splits is None:
        log.warning("no --splits: every model is seen, so the full pool equals the seen pool")
    return tables, splits


def _evaluate(args, tables, splits, knobs, pools, specs, out: Path) -> dict:
    """Route with every router spec; OUT's decision files are replaced only on success."""
    known = set(_router_names())
    for label, name, _ in specs:
        if name and name not in known:
            raise CliError(f"--router: unknown router {name!r}; known: {', '.join(sorted(known))} (or a checkpoint path)")
    # Rows go to .partial files, renamed over OUT's files only when every router has run: a failed
    # run (a bad option, an interrupt) leaves the previous run's decisions as they were.
    final = {"decisions": out / "decisions.jsonl", "shuffled": out / "decisions_shuffled.jsonl"}
    partial = {k: p.with_name(p.name + ".partial") for k, p in final.items()}
    partial["decisions"].write_text("")
    if args.shuffle_control:
        partial["shuffled"].write_text("")
    try:
        timings = _route_all(args, tables, splits, knobs, pools, specs, partial["decisions"], partial["shuffled"])
    except BaseException:
        for p in partial.values():
            p.unlink(missing_ok=True)
        raise
    partial["decisions"].replace(final["decisions"])
    if args.shuffle_control:
        partial["shuffled"].replace(final["shuffled"])
    else:  # a previous run's shuffle-control rows would be read as this run's
        final["shuffled"].unlink(missing_ok=True)
    return timings


def _route_all(args, tables, splits, knobs, pools, specs, decisions_path: Path, shuffled_path: Path) -> dict:
    """Route every dataset's prompts with every router, appending rows to the two files."""
    from routerl.descriptors import build_descriptors
    from routerl.eval.decisions import write_decisions
    from routerl.eval.runner import evaluation_prompts, run_router
    from routerl.eval.shuffle import shuffle_unseen_descriptors
    from routerl.eval.unseen_evidence import with_unseen_evidence
    from routerl.routers.registry import RouterResources, build_router

    timings: dict = {}
    for ds, table in tables.items():
        prompts = evaluation_prompts(table, args.split, args.limit, args.sample, args.seed)
        unseen = splits.unseen_models(ds) if splits else ()
        descriptors = with_unseen_evidence(build_descriptors(table), unseen, args.unseen_evidence)
        shuffled = shuffle_unseen_descriptors(descriptors, unseen, args.seed)
        resources = RouterResources(table=table, splits=splits, seed=args.seed, cache_dir=args.cache_dir, embedder=args.embedder)
        for label, name, options in specs:
            t0 = time.monotonic()
            if name:
                router = build_router(name, resources, **options)
            else:  # a checkpoint: report it under the policy's own name (e.g. policy:<dir>)
                router = load_checkpoint_router(label, resources)
                label = getattr(router, "name", "") or label
            t1 = time.monotonic()
            n = write_decisions(run_router(router, label, table, splits, prompts, descriptors, pools, knobs), decisions_path, append=True)
            t2 = time.monotonic()
            entry = {"build_s": round(t1 - t0, 2), "route_s": round(t2 - t1, 2), "rows": n}
            if args.shuffle_control and "full" in pools:
                write_decisions(run_router(router, label, table, splits, prompts, shuffled, ["full"], knobs), shuffled_path, append=True)
                entry["shuffle_s"] = round(time.monotonic() - t2, 2)
            timings[f"{ds}/{label}"] = entry
            log.info("%s on %s: built in %.1f s, routed %d rows in %.1f s", label, ds, t1 - t0, n, t2 - t1)
    return timings


def run(args) -> int:
    from routerl.eval.decisions import read_decisions
    from routerl.eval.metrics import compute_metrics
    from routerl.eval.plots import plot_curves
    from routerl.eval.report import metrics_markdown

    start = time.monotonic()
    knobs = parse_knobs(args.knobs)
    pools = [p.strip() for p in args.pools.split(",") if p.strip()]
    if not pools or any(p not in ("seen", "full") for p in pools) or len(set(pools)) != len(pools):
        raise CliError(f"--pools must be seen, full or seen,full; got {args.pools!r}")
    if args.seed < 0:
        raise CliError(f"--seed must be >= 0, got {args.seed}")
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit must be at least 1, got {args.limit}")
    out = output_dir(args.out, "--out")
    tables, splits = _load_tables(args)
    out.mkdir(parents=True, exist_ok=True)

    timings: dict = {}
    if args.from_decisions:
        source = Path(args.from_decisions)
        decisions_file = source / "decisions.jsonl" if source.is_dir() else source
        shuffled_file = decisions_file.with_name("decisions_shuffled.jsonl")
    else:
        specs = parse_router_specs(args.router)
        timings = _evaluate(args, tables, splits, knobs, pools, specs, out)
        decisions_file, shuffled_file = out / "decisions.jsonl", out / "decisions_shuffled.jsonl"
    rows = read_decisions(decisions_file)
    shuffled_rows = read_decisions(shuffled_file) if shuffled_file.exists() else []
    metrics = compute_metrics(rows, tables, splits, shuffled_rows)
    if not metrics["datasets"]:
        raise CliError(f"{decisions_file}: no decision rows for the loaded datasets ({', '.join(tables)})")
    metrics["run"] = {
        "split": args.split,
        "embedder": args.embedder,
        "knobs": knobs if not args.from_decisions else None,
        "seed": args.seed,
        "limit": args.limit,
        "data": list(args.data) or ["synthetic"],
        "timings": timings,
        "wall_s": round(time.monotonic() - start, 1),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    plot_curves(metrics, out / "curves.png")
    print(metrics_markdown(metrics))
    print(f"wrote {decisions_file}, {out / 'metrics.json'} and {out / 'curves.png'} in {time.monotonic() - start:.1f} s")
    return 0
