"""Decision files: JSONL, one row per (router, dataset, pool, knob, prompt)::

    {"router": str, "dataset": str, "pool": "seen"|"full", "knob": float,
     "prompt_id": str, "models": [str, ...], "final": str}

``models`` lists every model called, in order (each call is paid for); ``final`` is the model
whose answer counts. One file may hold several routers and datasets.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

from routerl.data.outcomes import iter_json_rows

POOLS = ("seen", "full")
FIELDS = ("router", "dataset", "pool", "knob", "prompt_id", "models", "final")


class DecisionFileError(ValueError):
    """A malformed decision row; the message names file, line and field."""


def validate_row(row: dict, where: str) -> dict:
    """Check one decision row's fields and types; returns it with ``knob`` as float."""
    for key in FIELDS:
        if key not in row:
            raise DecisionFileError(f"{where}: field '{key}' is missing")
    for key in ("router", "dataset", "prompt_id", "final"):
        if not isinstance(row[key], str) or not row[key]:
            raise DecisionFileError(f"{where}: field '{key}' must be a non-empty string")
    if row["pool"] not in POOLS:
        raise DecisionFileError(f"{where}: field 'pool' must be one of {POOLS}, got {row['pool']!r}")
    knob = row["knob"]
    if isinstance(knob, bool) or not isinstance(knob, (int, float)) or not math.isfinite(knob) or knob < 0:
        raise DecisionFileError(f"{where}: field 'knob' must be a finite number >= 0, got {knob!r}")
    models = row["models"]
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
        raise DecisionFileError(f"{where}: field 'models' must be a non-empty list of model ids")
    if row["final"] not in models:
        raise DecisionFileError(f"{where}: field 'final' ({row['final']!r}) must be one of the called models")
    out = dict(row)
    out["knob"] = float(knob)
    return out


def write_decisions(rows: Iterable[dict], path: str | Path, append: bool = False) -> int:
    """Write rows as JSONL (compact, fields in protocol order); returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "a" if append else "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({k: row[k] for k in FIELDS}, separators=(",", ":")) + "\n")
            n += 1
    return n


def read_decisions(path: str | Path) -> list[dict]:
    """Read and validate a decision file (``.jsonl`` or ``.jsonl.gz``)."""
    return [validate_row(row, f"{path}:{lineno}") for lineno, row in iter_json_rows(path)]
