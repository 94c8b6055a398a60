"""The YAML model catalog (``configs/catalog/*.yaml``)::

    version: 1
    models:
      - id: gpt-4o-mini-2024-07-18
        input_price_per_mtok: 0.15
        output_price_per_mtok: 0.6
        latency_ms: 0            # optional
        context_window: 128000   # optional
        sample_scores: {math_grade_school: 0.93, code_reasoning: 0.6}
        sample_counts: {math_grade_school: 120, code_reasoning: 80}
        probe_results: {"gsm/123": 1.0, ...}   # optional per-probe-prompt evidence
        mean_output_tokens: 310
        description: ""
        tags: [openai]

Loading validates every entry (its endpoint too: a catalog brings new models); errors name the
file, the entry and the field, once: ``c.yaml: models[0] (a): field 'input_price_per_mtok': ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from routerl.descriptors.model import DescriptorError, ModelDescriptor, shown_id
from routerl.text_files import write_text_atomically
from routerl.yaml_numbers import dump_yaml, read_yaml_file

CATALOG_VERSION = 1


def _entry_name(entry: object, n: int) -> str:
    """How errors name the ``n``-th entry: its id (shortened when overlong), else ``#n``."""
    model_id = entry.get("id") if isinstance(entry, dict) else None
    return shown_id(model_id) if isinstance(model_id, str) else f"#{n}"


def parse_catalog(raw: object, where: str) -> list[ModelDescriptor]:
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), list):
        raise ValueError(f"{where}: a catalog is a mapping with a 'models' list")
    version = raw.get("version", CATALOG_VERSION)
    if version != CATALOG_VERSION:
        raise ValueError(f"{where}: field 'version' must be {CATALOG_VERSION}, got {version!r}")
    out: list[ModelDescriptor] = []
    ids: set[str] = set()
    for n, entry in enumerate(raw["models"]):
        entry_where = f"{where}: models[{n}] ({_entry_name(entry, n)})"
        try:
            desc = ModelDescriptor.from_dict(entry)
            if desc.endpoint is not None:
                desc.endpoint.check()
        except DescriptorError as exc:
            raise exc.within(entry_where) from None
        except TypeError as exc:
            raise ValueError(f"{entry_where}: {exc}") from None
        if desc.id in ids:
            raise DescriptorError("id", f"duplicate id {desc.id!r}", f"{where}: models[{n}]")
        ids.add(desc.id)
        out.append(desc)
    return out


def load_catalog(path: str | Path) -> list[ModelDescriptor]:
    path = Path(path)
    raw = read_yaml_file(path, "catalog")
    return parse_catalog(raw, str(path))


def save_catalog(models: Iterable[ModelDescriptor], path: str | Path, *, with_probe_results: bool = True) -> None:
    entries = []
    for desc in models:
        d = desc.to_dict()
        if not with_probe_results:
            d.pop("probe_results", None)
        entries.append(d)
    write_text_atomically(path, dump_yaml({"version": CATALOG_VERSION, "models": entries}, sort_keys=False))
