"""The protocol's metrics, computed from decision rows and the outcome tables alone.

Per dataset and pool, over the evaluated prompts (those in the decision rows):

* per knob: ``accuracy`` (mean score of the final model) and ``usd_per_1k`` (mean of the summed
  cost of every model called, x 1000), ``unseen_share`` (share of finals to unseen models) and
  ``mean_calls`` (models called per query; its mean over knobs is also reported per router);
* ``aiq``: ``frontier.aiq`` of the knob points with ``c_max`` = USD/1k of the dataset's most
  expensive single model on the evaluated prompts (the same range for both pools, so that the
  pools' AIQs are comparable);
* ``gain_at_best_single``: best accuracy at a cost no higher than the best single model's, minus
  its accuracy (best single = the pool's single model with the highest train-split accuracy;
  where it has no row the next in that ranking answers); None when no point is that cheap;
* ``cost_save_at_best_single``: 1 - cheapest cost reaching its accuracy / its cost (None if never);
* ``oracle_gap_closed``: ``(aiq - aiq_singles) / (aiq_oracle - aiq_singles)`` where
  ``aiq_singles`` is the AIQ of the pool's single-model points (the best any fixed model choice
  achieves) and ``aiq_oracle`` the cost-aware oracle's over the same knobs;
* full pool only: ``unseen_share`` (all knobs) and ``unseen_capture`` =
  ``(aiq_full - aiq_seen) / (oracle aiq_full - oracle aiq_seen)``; with shuffle-control rows,
  ``unseen_capture_shuffled`` is the same with the shuffled run's full-pool AIQ.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from routerl.data.outcomes import OutcomeTable
from routerl.data.splits import Splits
from routerl.eval.frontier import aiq, cost_save_at, gain_at
from routerl.eval.references import best_single, oracle_points, single_model_points
from routerl.eval.runner import pool_masks
from routerl.routers.base import USD_SCALE


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def _ratio(num: float, den: float) -> float | None:
    return num / den if abs(den) > 1e-12 else None


def _outcome(table: OutcomeTable, available: np.ndarray, mask: np.ndarray, row: dict) -> tuple[float, float]:
    """``(score of the final model, summed cost of every call)``; ``available`` is ``table.available``."""
    i = table.prompt_index(row["prompt_id"])
    cost = 0.0
    for model in row["models"]:
        if not table.has_model(model):
            raise ValueError(f"router {row['router']!r} called {model!r}, unknown in dataset {table.name!r}")
        j = table.model_index(model)
        if not (mask[j] and available[i, j]):
            raise ValueError(
                f"router {row['router']!r} called {model!r} on {row['prompt_id']!r}: not in its {row['pool']} pool"
            )
        cost += float(table.cost[i, j])
    return float(table.score[i, table.model_index(row["final"])]), cost


def cost_range(table: OutcomeTable, splits: Splits | None, prompt_ids: Sequence[str]) -> tuple[str, float]:
    """The AIQ cost range of ``table`` on these prompts: ``(model, USD per 1k)`` of the most
    expensive single model of the full pool (the same range for both pools)."""
    full_mask = pool_masks(table, splits, ["full"])["full"]
    singles = single_model_points(table, full_mask, np.array([table.prompt_index(p) for p in prompt_ids]))
    if not singles:
        raise ValueError(f"{table.name}: no single model (priced row on >= 95% of prompts) to set the AIQ cost range")
    expensive = max(singles, key=lambda m: singles[m][1])
    return expensive, singles[expensive][1]


def router_curves(
    rows: Iterable[dict], tables: dict[str, OutcomeTable], splits: Splits | None
) -> dict[tuple[str, str, str], dict[float, dict[str, tuple[float, float, str]]]]:
    """``{(dataset, pool, router): {knob: {prompt_id: (score, cost_usd, final, calls)}}}``."""
    masks: dict[tuple[str, str], np.ndarray] = {}
    available = {name: table.available for name, table in tables.items()}  # a property: compute once
    out: dict = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        table = tables.get(row["dataset"])
        if table is None:
            raise ValueError(f"decision rows name dataset {row['dataset']!r}, which was not loaded")
        key = (row["dataset"], row["pool"])
        if key not in masks:
            masks[key] = pool_masks(table, splits, [row["pool"]])[row["pool"]]
        score, cost = _outcome(table, available[row["dataset"]], masks[key], row)
        cell = out[(row["dataset"], row["pool"], row["router"])][row["knob"]]
        if row["prompt_id"] in cell:
            raise ValueError(f"two decisions for {row['router']!r} {row['pool']} knob {row['knob']} on {row['prompt_id']!r}")
        cell[row["prompt_id"]] = (score, cost, row["final"], len(row["models"]))
    return out


def _points(curve: dict[float, dict], prompt_set: set[str], unseen: set[str], label: str) -> list[dict]:
    points = []
    for knob in sorted(curve):
        cell = curve[knob]
        if set(cell) != prompt_set:
            raise ValueError(f"{label} knob {knob}: decisions cover {len(cell)} prompts, expected the {len(prompt_set)} evaluated")
        vals = list(cell.values())
        points.append(
            {
                "knob": knob,
                "accuracy": float(np.mean([v[0] for v in vals])),
                "usd_per_1k": float(np.mean([v[1] for v in vals]) * USD_SCALE),
                "unseen_share": float(np.mean([v[2] in unseen for v in vals])),
                "mean_calls": float(np.mean([v[3] for v in vals])),
            }
        )
    return points


def compute_metrics(
    rows: Sequence[dict],
    tables: dict[str, OutcomeTable],
    splits: Splits | None,
    shuffled_rows: Sequence[dict] = (),
) -> dict:
    """All protocol metrics of the routers in ``rows`` (see the module docstring).

    Returns ``{"datasets": {name: {"n_prompts", "c_max_usd_per_1k", "most_expensive_single",
    "pools": {pool: {"n_prompts", "best_single", "single_models", "oracle", "singles_aiq",
    "routers": {router: {...metrics..., "points": [...]}}}}}}}``.
    """
    curves = router_curves(rows, tables, splits)
    shuffled = router_curves(shuffled_rows, tables, splits) if shuffled_rows else {}
    result: dict = {"datasets": {}}
    for name, table in tables.items():
        keys = [k for k in curves if k[0] == name]
        if not keys:
            continue
        unseen = set(splits.unseen_models(name)) if splits else set()
        pools = sorted({k[1] for k in keys}, key=("seen", "full").index)
        prompt_sets = {}
        for pool in pools:
            ids = set()
            for key in keys:
                if key[1] == pool:
                    for cell in curves[key].values():
                        ids.update(cell)
            prompt_sets[pool] = ids
        all_ids = sorted(set().union(*prompt_sets.values()), key=table.prompt_index)
        expensive, c_max = cost_range(table, splits, all_ids)
        knobs_all = sorted({knob for key in keys for knob in curves[key]})
        raw: dict[tuple[str, str], float] = {}  # (pool, router or "<oracle>") -> unrounded AIQ
        ds: dict = {
            "n_prompts": len(all_ids),
            "c_max_usd_per_1k": _round(c_max, 6),
            "most_expensive_single": expensive,
            "pools": {},
        }
        for pool in pools:
            mask = pool_masks(table, splits, [pool])[pool]
            prompts = np.array(sorted((table.prompt_index(p) for p in prompt_sets[pool])))
            singles = single_model_points(table, mask, prompts)
            bs = best_single(table, mask)
            bs_acc, bs_cost = singles[bs]
            oracle = oracle_points(table, mask, prompts, knobs_all)
            oracle_aiq = aiq([p[2] for p in oracle], [p[1] for p in oracle], c_max)
            raw[(pool, "<oracle>")] = oracle_aiq
            singles_aiq = aiq([v[1] for v in singles.values()], [v[0] for v in singles.values()], c_max)
            routers = {}
            for key in sorted(k for k in keys if k[1] == pool):
                points = _points(curves[key], prompt_sets[pool], unseen, f"{key[2]} on {name}/{pool}")
                costs = [p["usd_per_1k"] for p in points]
                accs = [p["accuracy"] for p in points]
                value = aiq(costs, accs, c_max)
                raw[(pool, key[2])] = value
                routers[key[2]] = {
                    "aiq": _round(value),
                    "gain_at_best_single": _round(gain_at(costs, accs, bs_cost, bs_acc)),
                    "cost_save_at_best_single": _round(cost_save_at(costs, accs, bs_cost, bs_acc)),
                    "oracle_gap_closed": _round(_ratio(value - singles_aiq, oracle_aiq - singles_aiq)),
                    "max_accuracy": _round(max(accs)),
                    "mean_calls": _round(float(np.mean([p["mean_calls"] for p in points]))),
                    "points": [{k: _round(v, 6) for k, v in p.items()} for p in points],
                }
                if pool == "full":
                    routers[key[2]]["unseen_share"] = _round(float(np.mean([p["unseen_share"] for p in points])))
            ds["pools"][pool] = {
                "n_prompts": len(prompts),
                "best_single": {"model": bs, "accuracy": _round(bs_acc), "usd_per_1k": _round(bs_cost, 6)},
                "single_models": {m: {"accuracy": _round(a), "usd_per_1k": _round(c, 6)} for m, (a, c) in singles.items()},
                "oracle": {"aiq": _round(oracle_aiq), "points": [{"knob": k, "accuracy": _round(a), "usd_per_1k": _round(c, 6)} for k, a, c in oracle]},
                "singles_aiq": _round(singles_aiq),
                "routers": routers,
            }
        _unseen_capture(ds, raw, name, shuffled, prompt_sets, unseen, c_max)
        result["datasets"][name] = ds
    return result


def _unseen_capture(
    ds: dict, raw: dict, name: str, shuffled: dict, prompt_sets: dict, unseen: set[str], c_max: float
) -> None:
    """Add ``unseen_capture`` (and ``unseen_capture_shuffled``) to each full-pool router;
    ``raw`` holds the unrounded AIQs by (pool, router)."""
    pools = ds["pools"]
    if "seen" not in pools or "full" not in pools:
        return
    if prompt_sets["seen"] != prompt_sets["full"]:
        return  # the two pools were evaluated on different prompts: not comparable
    oracle_gain = raw[("full", "<oracle>")] - raw[("seen", "<oracle>")]
    pools["full"]["oracle"]["unseen_gain"] = _round(oracle_gain)
    for router, full in pools["full"]["routers"].items():
        if ("seen", router) not in raw:
            continue
        seen_aiq = raw[("seen", router)]
        full["unseen_capture"] = _round(_ratio(raw[("full", router)] - seen_aiq, oracle_gain))
        curve = shuffled.get((name, "full", router))
        if curve:
            points = _points(curve, prompt_sets["full"], unseen, f"{router} (shuffled) on {name}/full")
            value = aiq([p["usd_per_1k"] for p in points], [p["accuracy"] for p in points], c_max)
            full["aiq_shuffled"] = _round(value)
            full["unseen_share_shuffled"] = _round(float(np.mean([p["unseen_share"] for p in points])))
            full["unseen_capture_shuffled"] = _round(_ratio(value - seen_aiq, oracle_gain))
