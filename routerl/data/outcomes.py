"""Outcome tables: recorded per-(prompt, model) results in the documented JSONL(.gz) format.

One row per (prompt, model)::

    {"prompt_id", "task", "domain", "prompt", "gold_answer", "model", "score",
     "prompt_tokens", "response_tokens", "input_usd_per_mtok", "output_usd_per_mtok",
     "est_cost_usd", ...}

Required: ``prompt_id``, ``model``, ``score`` (a float in [0, 1]; a numeric string is accepted).
``prompt`` is required on the first row of each prompt. ``est_cost_usd`` may be empty: such a
model has no public price and is left out of every pool (with a warning). When it is absent but
prices and token counts are present, it is computed from them.

The table is held as dense ``(P, M)`` matrices (prompts x models, NaN where no row): MMLU-Pro's
347k rows are a 12,032 x 29 matrix, a few MB, loaded in seconds.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np

from routerl.data.splits import SPLIT_NAMES, Splits, split_of

log = logging.getLogger(__name__)


class OutcomeDataError(ValueError):
    """A malformed outcome or response file; the message names file, line and field."""


def open_text(path: str | Path):
    """Open a .jsonl or .jsonl.gz file for reading text."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.is_dir():
        raise OutcomeDataError(f"{path}: is a directory, not a .jsonl or .jsonl.gz file")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def iter_json_rows(path: str | Path) -> Iterable[tuple[int, dict]]:
    """Yield (line number, row) for each non-blank line; a bad line raises OutcomeDataError."""
    with open_text(path) as handle:
        try:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise OutcomeDataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise OutcomeDataError(f"{path}:{lineno}: a row must be a JSON object")
                yield lineno, row
        except (EOFError, gzip.BadGzipFile, OSError) as exc:
            raise OutcomeDataError(f"{path}: cannot read compressed data ({exc})") from None
        except UnicodeDecodeError as exc:
            raise OutcomeDataError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _number(row: dict, key: str, where: str, *, required: bool, lo: float = 0.0, hi: float = math.inf):
    """Parse an optional numeric field ('' and None mean missing) with bounds."""
    value = row.get(key)
    if value is None or value == "":
        if required:
            raise OutcomeDataError(f"{where}: field '{key}' is missing")
        return math.nan
    if isinstance(value, bool):
        raise OutcomeDataError(f"{where}: field '{key}' must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OutcomeDataError(f"{where}: field '{key}' must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < lo or number > hi:
        raise OutcomeDataError(f"{where}: field '{key}' must be in [{lo}, {hi}], got {value!r}")
    return number


def _text(row: dict, key: str, where: str, *, required: bool) -> str:
    value = row.get(key)
    if value is None or value == "":
        if required:
            raise OutcomeDataError(f"{where}: field '{key}' is missing")
        return ""
    if not isinstance(value, str):
        raise OutcomeDataError(f"{where}: field '{key}' must be a string, got {type(value).__name__}")
    return value


@dataclass
class OutcomeTable:
    """Recorded outcomes of one dataset as dense prompt x model matrices.

    Shapes: ``score``, ``cost``, ``prompt_tokens``, ``response_tokens``: ``(P, M)`` float, NaN where
    the model has no row for the prompt (``cost`` is also NaN for unpriced models).
    ``input_price``/``output_price``: ``(M,)`` USD per million tokens, NaN when unpriced.
    """

    name: str
    prompt_ids: list[str]
    prompt_text: list[str]
    domain: list[str]
    task: list[str]
    gold: list[str]
    models: list[str]
    score: np.ndarray
    cost: np.ndarray
    prompt_tokens: np.ndarray
    response_tokens: np.ndarray
    input_price: np.ndarray
    output_price: np.ndarray
    responses: "ResponseStore | None" = None
    source: str = ""
    _prompt_index: dict[str, int] = field(default_factory=dict, repr=False)
    _model_index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._prompt_index = {p: i for i, p in enumerate(self.prompt_ids)}
        self._model_index = {m: j for j, m in enumerate(self.models)}
        self.split = np.array([split_of(p) for p in self.prompt_ids])

    # -- lookups -----------------------------------------------------------------------------
    @property
    def n_prompts(self) -> int:
        return len(self.prompt_ids)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def prompt_index(self, prompt_id: str) -> int:
        try:
            return self._prompt_index[prompt_id]
        except KeyError:
            raise KeyError(f"unknown prompt_id {prompt_id!r} in dataset {self.name!r}") from None

    def model_index(self, model: str) -> int:
        try:
            return self._model_index[model]
        except KeyError:
            raise KeyError(f"unknown model {model!r} in dataset {self.name!r}") from None

    def has_model(self, model: str) -> bool:
        return model in self._model_index

    @property
    def priced(self) -> np.ndarray:
        """``(M,)`` bool: the model has a public price (else it never enters a pool)."""
        return np.isfinite(self.input_price) & np.isfinite(self.output_price)

    @cached_property
    def available(self) -> np.ndarray:
        """``(P, M)`` bool: a scored, priced row exists (the model may be in this prompt's pool).
        Computed once: the table's rows never change after loading (score values may be replaced
        by a copy, as tests do, but never their presence)."""
        return np.isfinite(self.score) & np.isfinite(self.cost)

    def prompts_in(self, split: str) -> np.ndarray:
        """Indices of the prompts in one split (train, probe, val, test)."""
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLIT_NAMES}")
        return np.flatnonzero(self.split == split)

    def model_mask(self, models: Iterable[str]) -> np.ndarray:
        mask = np.zeros(self.n_models, dtype=bool)
        for m in models:
            if m in self._model_index:
                mask[self._model_index[m]] = True
        return mask

    def seen_mask(self, splits: Splits | None) -> np.ndarray:
        """``(M,)`` bool: models allowed in training pools."""
        if splits is None:
            return np.ones(self.n_models, dtype=bool)
        return np.array([splits.is_seen(self.name, m) for m in self.models])

    def unseen_mask(self, splits: Splits | None) -> np.ndarray:
        """``(M,)`` bool: models that only enter evaluation pools."""
        if splits is None:
            return np.zeros(self.n_models, dtype=bool)
        return self.model_mask(splits.unseen_models(self.name))

    def pool(self, prompt: int, allowed: np.ndarray) -> list[int]:
        """Model indices with a priced row for ``prompt``, restricted to the ``(M,)`` mask."""
        return np.flatnonzero(self.available[prompt] & allowed).tolist()

    def single_models(self, min_coverage: float = 0.95) -> list[int]:
        """Models with a priced row on at least ``min_coverage`` of the prompts (protocol's
        "single models": best single, most expensive single model, reference dots)."""
        coverage = self.available.mean(axis=0)
        return np.flatnonzero(coverage >= min_coverage).tolist()

    def response(self, prompt: int, model: int) -> str | None:
        if self.responses is None:
            return None
        return self.responses.get(self.prompt_ids[prompt], self.models[model])

    def subset(self, prompts: np.ndarray | list[int]) -> "OutcomeTable":
        """A table restricted to some prompts (same models), e.g. a small slice for tests."""
        idx = np.asarray(prompts, dtype=int)
        return OutcomeTable(
            name=self.name,
            prompt_ids=[self.prompt_ids[i] for i in idx],
            prompt_text=[self.prompt_text[i] for i in idx],
            domain=[self.domain[i] for i in idx],
            task=[self.task[i] for i in idx],
            gold=[self.gold[i] for i in idx],
            models=list(self.models),
            score=self.score[idx],
            cost=self.cost[idx],
            prompt_tokens=self.prompt_tokens[idx],
            response_tokens=self.response_tokens[idx],
            input_price=self.input_price.copy(),
            output_price=self.output_price.copy(),
            responses=self.responses,
            source=self.source,
        )


def dataset_name_of(path: str | Path) -> str:
    """``.../zeroeval.jsonl.gz`` -> ``zeroeval`` (the key into splits.json)."""
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def load_outcomes(
    path: str | Path,
    *,
    name: str | None = None,
    responses: str | Path | None | bool = True,
) -> OutcomeTable:
    """Load an outcome table.

    Args:
        path: a JSONL or JSONL.gz file in the documented row format.
        name: dataset name (the key in splits.json); defaults to the file name without suffixes.
        responses: a responses file, ``True`` to use ``<name>_responses.jsonl.gz`` beside ``path``
            when it exists (loaded lazily, on first use), or ``False``/``None`` for none.
    """
    path = Path(path)
    name = name or dataset_name_of(path)
    prompt_ids: list[str] = []
    p_index: dict[str, int] = {}
    texts: list[str] = []
    rows_of_prompt: list[int] = []
    text_votes: dict[int, Counter] = {}
    domains: list[str] = []
    tasks: list[str] = []
    golds: list[str] = []
    m_index: dict[str, int] = {}
    models: list[str] = []
    in_price: list[float] = []
    out_price: list[float] = []
    rows_p: list[int] = []
    rows_m: list[int] = []
    rows_score: list[float] = []
    rows_cost: list[float] = []
    rows_pt: list[float] = []
    rows_rt: list[float] = []
    seen_pairs: set[tuple[int, int]] = set()

    for lineno, row in iter_json_rows(path):
        where = f"{path}:{lineno}"
        pid = _text(row, "prompt_id", where, required=True)
        model = _text(row, "model", where, required=True)
        score = _number(row, "score", where, required=True, lo=0.0, hi=1.0)
        pt = _number(row, "prompt_tokens", where, required=False)
        rt = _number(row, "response_tokens", where, required=False)
        ip = _number(row, "input_usd_per_mtok", where, required=False, hi=1e5)
        op = _number(row, "output_usd_per_mtok", where, required=False, hi=1e5)
        cost = _number(row, "est_cost_usd", where, required=False, hi=1e4)
        if math.isnan(cost) and not any(math.isnan(v) for v in (ip, op, pt, rt)):
            cost = (ip * pt + op * rt) / 1e6
        i = p_index.get(pid)
        text = row.get("prompt")
        if i is None:
            text = _text(row, "prompt", where, required=True)
            i = p_index[pid] = len(prompt_ids)
            prompt_ids.append(pid)
            texts.append(text)
            rows_of_prompt.append(0)
            tasks.append(_text(row, "task", where, required=False))
            domains.append(_text(row, "domain", where, required=False) or tasks[-1] or "general")
            golds.append(str(row.get("gold_answer", "") or ""))
        elif i in text_votes:
            if isinstance(text, str) and text:
                text_votes[i][text] += 1
        elif isinstance(text, str) and text and text != texts[i]:
            # The same prompt id shown with different text to different models: keep the most common.
            text_votes[i] = Counter({texts[i]: rows_of_prompt[i], text: 1})
        rows_of_prompt[i] += 1
        j = m_index.get(model)
        if j is None:
            j = m_index[model] = len(models)
            models.append(model)
            in_price.append(math.nan)
            out_price.append(math.nan)
        if not math.isnan(ip) and not math.isnan(op) and not math.isnan(cost):
            in_price[j], out_price[j] = ip, op
        if (i, j) in seen_pairs:
            raise OutcomeDataError(f"{where}: duplicate row for prompt_id {pid!r} and model {model!r}")
        seen_pairs.add((i, j))
        rows_p.append(i)
        rows_m.append(j)
        rows_score.append(score)
        rows_cost.append(cost)
        rows_pt.append(pt)
        rows_rt.append(rt)

    if not prompt_ids:
        raise OutcomeDataError(f"{path}: no rows")
    P, M = len(prompt_ids), len(models)
    rp, rm = np.asarray(rows_p), np.asarray(rows_m)

    def matrix(values: list[float], dtype) -> np.ndarray:
        out = np.full((P, M), np.nan, dtype=dtype)
        out[rp, rm] = np.asarray(values, dtype=dtype)
        return out

    cost_m = matrix(rows_cost, np.float64)
    prices_in = np.asarray(in_price)
    prices_out = np.asarray(out_price)
    unpriced = [models[j] for j in range(M) if math.isnan(prices_in[j]) or math.isnan(prices_out[j])]
    if unpriced:
        log.warning("%s: models with no price are left out of every pool: %s", path, ", ".join(unpriced))
        cost_m[:, [m_index[m] for m in unpriced]] = np.nan

    for i, votes in text_votes.items():
        texts[i] = votes.most_common(1)[0][0]
    store = None
    if responses is True:
        candidate = path.with_name(f"{name}_responses.jsonl.gz")
        store = ResponseStore(candidate) if candidate.exists() else None
    elif responses:
        store = ResponseStore(responses)
    return OutcomeTable(
        name=name,
        prompt_ids=prompt_ids,
        prompt_text=texts,
        domain=domains,
        task=tasks,
        gold=golds,
        models=models,
        score=matrix(rows_score, np.float32),
        cost=cost_m,
        prompt_tokens=matrix(rows_pt, np.float32),
        response_tokens=matrix(rows_rt, np.float32),
        input_price=prices_in,
        output_price=prices_out,
        responses=store,
        source=str(path),
    )


class ResponseStore:
    """Response texts keyed by (prompt_id, model), read from a JSONL(.gz) file on first use.

    Rows: ``{"prompt_id", "model", "response"}``. Held in memory once loaded (the shared
    MMLU-Pro responses are ~25 MB compressed).
    """

    def __init__(self, path: str | Path, texts: dict[tuple[str, str], str] | None = None):
        self.path = Path(path) if path else None
        self._texts = texts

    @classmethod
    def from_dict(cls, texts: dict[tuple[str, str], str]) -> "ResponseStore":
        return cls(path="", texts=texts)

    def _load(self) -> dict[tuple[str, str], str]:
        if self._texts is None:
            texts: dict[tuple[str, str], str] = {}
            for lineno, row in iter_json_rows(self.path):
                where = f"{self.path}:{lineno}"
                key = (_text(row, "prompt_id", where, required=True), _text(row, "model", where, required=True))
                texts[key] = _text(row, "response", where, required=False)
            self._texts = texts
        return self._texts

    def get(self, prompt_id: str, model: str) -> str | None:
        return self._load().get((prompt_id, model))

    def __len__(self) -> int:
        return len(self._load())
