"""Protocol metrics on hand-computed tiny cases."""

from __future__ import annotations

import numpy as np
import pytest

from routerl.data.outcomes import OutcomeTable
from routerl.data.splits import DatasetModels, Splits, split_of
from routerl.descriptors import ModelDescriptor
from routerl.eval.frontier import aiq, cost_save_at, gain_at, upper_hull
from routerl.eval.metrics import compute_metrics
from routerl.eval.shuffle import shuffle_unseen_descriptors


# -- the frontier ----------------------------------------------------------------------------
def test_aiq_of_a_known_concave_hull():
    # Hull (0,0) (1,.5) (2,.8) (4,.9): area .25 + .65 + 1.7 = 2.6 over a range of 4.
    assert aiq([1, 2, 4], [0.5, 0.8, 0.9], c_max=4) == pytest.approx(0.65)


def test_points_under_the_hull_or_past_its_peak_do_not_count():
    base = aiq([1, 2, 4], [0.5, 0.8, 0.9], 4)
    assert aiq([1, 2, 4, 3], [0.5, 0.8, 0.9, 0.7], 4) == pytest.approx(base)  # under the chord
    assert aiq([1, 2, 4, 3.5], [0.5, 0.8, 0.9, 0.2], 4) == pytest.approx(base)  # a worse, dearer point
    xs, ys = upper_hull([1, 2, 4, 5], [0.5, 0.8, 0.9, 0.6])
    assert list(xs) == [0, 1, 2, 4] and list(ys) == [0, 0.5, 0.8, 0.9]  # non-decreasing


def test_a_single_point_is_extended_flat_to_the_cost_range():
    # (0,0)-(1,.6) then flat to 3: (.3 + 1.2) / 3.
    assert aiq([1], [0.6], c_max=3) == pytest.approx(0.5)
    assert aiq([1, 2], [0.6, 0.5], c_max=3) == pytest.approx(0.5)


def test_a_non_concave_point_is_bridged_by_the_hull():
    # (1,.25) lies under the chord from (0,0) to (1.75,1): hull (0,0)-(1.75,1), flat to 4.
    assert aiq([1, 1.75], [0.25, 1.0], c_max=4) == pytest.approx((0.875 + 2.25) / 4)


def test_points_beyond_the_cost_range_shape_the_hull_but_the_area_stops():
    # Chord (2,.8)-(6,1.0) passes (4,.9): area up to 4 unchanged.
    assert aiq([1, 2, 6], [0.5, 0.8, 1.0], c_max=4) == pytest.approx(0.65)


def test_gain_and_cost_save_at_best_single():
    costs, accs = [1, 2, 4], [0.5, 0.8, 0.9]
    assert gain_at(costs, accs, ref_cost=3, ref_acc=0.75) == pytest.approx(0.05)
    assert cost_save_at(costs, accs, ref_cost=3, ref_acc=0.75) == pytest.approx(1 - 2 / 3)
    assert gain_at(costs, accs, ref_cost=0.5, ref_acc=0.4) is None
    assert cost_save_at(costs, accs, ref_cost=3, ref_acc=0.95) is None
    assert cost_save_at(costs, accs, ref_cost=1.5, ref_acc=0.85) == pytest.approx(1 - 4 / 1.5)


# -- compute_metrics on a tiny table ---------------------------------------------------------
def _ids(split: str, n: int) -> list[str]:
    out, k = [], 0
    while len(out) < n:
        if split_of(f"tiny/{k}") == split:
            out.append(f"tiny/{k}")
        k += 1
    return out


@pytest.fixture()
def tiny():
    """Models A ($1/1k, seen), B ($4/1k, seen), U ($2/1k, unseen) on 4 train + 4 test prompts."""
    train, test = _ids("train", 4), _ids("test", 4)
    score = np.array(
        [[1, 1, 1], [0, 1, 1], [0, 1, 1], [0, 0, 1],  # train: A .25, B .75, U 1.0
         [1, 1, 0], [0, 1, 1], [0, 1, 1], [0, 0, 1]],  # test: A .25, B .75, U .75
        dtype=np.float32,
    )
    cost = np.tile([0.001, 0.004, 0.002], (8, 1))
    ones = np.ones((8, 3), dtype=np.float32)
    table = OutcomeTable(
        name="tiny", prompt_ids=train + test, prompt_text=[f"q{i}" for i in range(8)], domain=["d"] * 8,
        task=["d"] * 8, gold=[""] * 8, models=["A", "B", "U"], score=score, cost=cost,
        prompt_tokens=ones, response_tokens=ones, input_price=np.array([1.0, 4.0, 2.0]),
        output_price=np.array([1.0, 4.0, 2.0]),
    )
    splits = Splits(datasets={"tiny": DatasetModels(seen=["A", "B"], unseen=["U"])})
    rows = []
    for n, pid in enumerate(test):
        for pool, knob, final in [
            ("seen", 0.0, "B"), ("seen", 1.0, "A"),
            ("full", 0.0, "A" if n == 0 else "U"), ("full", 1.0, "A"),
        ]:
            rows.append({"router": "r", "dataset": "tiny", "pool": pool, "knob": knob, "prompt_id": pid,
                         "models": [final], "final": final})
    return table, splits, rows


def test_metrics_of_a_tiny_case_by_hand(tiny):
    table, splits, rows = tiny
    m = compute_metrics(rows, {"tiny": table}, splits)["datasets"]["tiny"]
    assert m["c_max_usd_per_1k"] == pytest.approx(4.0) and m["most_expensive_single"] == "B"
    seen, full = m["pools"]["seen"], m["pools"]["full"]
    assert seen["best_single"] == {"model": "B", "accuracy": 0.75, "usd_per_1k": 4.0}
    assert full["best_single"]["model"] == "U"

    r = seen["routers"]["r"]
    assert [(p["knob"], p["accuracy"], p["usd_per_1k"]) for p in r["points"]] == [(0.0, 0.75, 4.0), (1.0, 0.25, 1.0)]
    assert r["aiq"] == pytest.approx(0.40625)  # (.125 + 1.5) / 4
    assert r["gain_at_best_single"] == 0.0 and r["cost_save_at_best_single"] == 0.0
    assert seen["singles_aiq"] == pytest.approx(0.40625)
    # Oracle, seen pool: knob 0 -> A,B,B,A (acc .75 at $2.5/1k); knob 1 -> all A.
    assert seen["oracle"]["aiq"] == pytest.approx(0.515625)
    assert r["oracle_gap_closed"] == pytest.approx(0.0)

    f = full["routers"]["r"]
    assert f["points"][0]["accuracy"] == 1.0 and f["points"][0]["usd_per_1k"] == pytest.approx(1.75)
    assert f["aiq"] == pytest.approx(0.78125)
    assert f["gain_at_best_single"] == pytest.approx(0.25)  # vs U: .75 at $2/1k
    assert f["cost_save_at_best_single"] == pytest.approx(0.125)
    assert full["oracle"]["aiq"] == pytest.approx(0.78125)
    assert f["oracle_gap_closed"] == pytest.approx(1.0)  # singles AIQ .5625
    assert f["unseen_share"] == pytest.approx(0.375)
    assert f["unseen_capture"] == pytest.approx((0.78125 - 0.40625) / (0.78125 - 0.515625), abs=1e-6)


def test_decisions_calling_models_outside_the_pool_are_rejected(tiny):
    table, splits, rows = tiny
    bad = dict(rows[0], models=["U"], final="U")  # a seen-pool row calling the unseen model
    with pytest.raises(ValueError, match="not in its seen pool"):
        compute_metrics([bad] + rows[1:], {"tiny": table}, splits)


def test_decisions_must_cover_every_evaluated_prompt(tiny):
    table, splits, rows = tiny
    with pytest.raises(ValueError, match="cover"):
        compute_metrics(rows[1:], {"tiny": table}, splits)


def test_cost_is_the_sum_over_every_model_called(tiny):
    table, splits, rows = tiny
    rows = [dict(r, models=["A", r["final"]]) if r["pool"] == "seen" and r["knob"] == 0.0 else r for r in rows]
    point = compute_metrics(rows, {"tiny": table}, splits)["datasets"]["tiny"]["pools"]["seen"]["routers"]["r"]["points"][0]
    assert point["usd_per_1k"] == pytest.approx(5.0) and point["accuracy"] == 0.75
    m = compute_metrics(rows, {"tiny": table}, splits)["datasets"]["tiny"]["pools"]["seen"]["routers"]["r"]
    assert point["mean_calls"] == 2.0 and m["points"][1]["mean_calls"] == 1.0 and m["mean_calls"] == 1.5


# -- the shuffle control ---------------------------------------------------------------------
def test_shuffle_deranges_unseen_evidence_and_keeps_prices():
    descs = {
        m: ModelDescriptor(id=m, input_price_per_mtok=p, output_price_per_mtok=p,
                           sample_scores={"d": s}, sample_counts={"d": 3}, probe_results={"x": s})
        for m, p, s in [("s", 1.0, 0.1), ("u1", 2.0, 0.2), ("u2", 3.0, 0.3), ("u3", 4.0, 0.4)]
    }
    out = shuffle_unseen_descriptors(descs, ["u1", "u2", "u3"], seed=3)
    assert out["s"] is descs["s"]
    assert sorted(out[m].sample_scores["d"] for m in ("u1", "u2", "u3")) == [0.2, 0.3, 0.4]
    for m in ("u1", "u2", "u3"):
        assert out[m].input_price_per_mtok == descs[m].input_price_per_mtok
        assert out[m].sample_scores != descs[m].sample_scores
        assert out[m].probe_results == {"x": out[m].sample_scores["d"]}
