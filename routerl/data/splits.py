"""The fixed evaluation protocol: prompt buckets and seen/unseen models.

Prompt split rule (``../shared/data/README.md``)::

    bucket = int(sha256(prompt_id).hexdigest()[:8], 16) % 100
    bucket < 60 -> train, < 70 -> probe, < 80 -> val, else test

A splits file (``splits.json``) lists per dataset the ``seen_models`` (may enter training pools)
and ``unseen_models`` (only ever enter evaluation pools, through descriptors built from probe rows).
A dataset the file does not name (a user's own logs) has every model seen and none unseen.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from routerl.text_files import read_text

SPLIT_NAMES = ("train", "probe", "val", "test")


def bucket_of(prompt_id: str) -> int:
    """The protocol bucket in [0, 100) of a prompt id."""
    return int(hashlib.sha256(prompt_id.encode("utf-8")).hexdigest()[:8], 16) % 100


def split_of(prompt_id: str) -> str:
    """The split (train, probe, val or test) a prompt id belongs to."""
    b = bucket_of(prompt_id)
    if b < 60:
        return "train"
    if b < 70:
        return "probe"
    if b < 80:
        return "val"
    return "test"


@dataclass
class DatasetModels:
    seen: list[str] = field(default_factory=list)
    unseen: list[str] = field(default_factory=list)


@dataclass
class Splits:
    """Seen/unseen model lists per dataset; the prompt split is the hash rule above."""

    datasets: dict[str, DatasetModels] = field(default_factory=dict)
    path: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> "Splits":
        path = Path(path)
        try:
            raw = json.loads(read_text(path, "splits file"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("datasets"), dict):
            raise ValueError(f"{path}: field 'datasets' must be an object of dataset -> models")
        datasets: dict[str, DatasetModels] = {}
        for name, entry in raw["datasets"].items():
            if not isinstance(entry, dict):
                raise ValueError(f"{path}: field 'datasets.{name}' must be an object")
            lists = {}
            for key in ("seen_models", "unseen_models"):
                value = entry.get(key, [])
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{path}: field 'datasets.{name}.{key}' must be a list of strings")
                lists[key] = value
            overlap = set(lists["seen_models"]) & set(lists["unseen_models"])
            if overlap:
                raise ValueError(
                    f"{path}: field 'datasets.{name}': models both seen and unseen: {sorted(overlap)}"
                )
            datasets[name] = DatasetModels(seen=lists["seen_models"], unseen=lists["unseen_models"])
        return cls(datasets=datasets, path=str(path))

    def unseen_models(self, dataset: str) -> set[str]:
        entry = self.datasets.get(dataset)
        return set(entry.unseen) if entry else set()

    def is_seen(self, dataset: str, model: str) -> bool:
        """Seen = may enter training pools. Models of an unnamed dataset are all seen; models of a
        named dataset are seen only when listed as seen (a model listed nowhere is not trusted)."""
        entry = self.datasets.get(dataset)
        if entry is None:
            return True
        return model in entry.seen
