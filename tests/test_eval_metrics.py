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


# -- edge cases of the protocol's definitions (audit) ----------------------------------------
def _brute_aiq(costs, accs, c_max):
    """An independent AIQ: the non-decreasing concave majorant of the points and (0, 0) at x is
    max(best y at cost <= x, best chord value at x between a point left of x and one right of
    it); it is linear between consecutive point costs, so the trapezoid rule on them is exact."""
    pts = [(0.0, 0.0)] + [(float(c), float(a)) for c, a in zip(costs, accs)]

    def g(x):
        best = max(y for xi, y in pts if xi <= x)
        for xi, yi in pts:
            for xj, yj in pts:
                if xi <= x < xj:
                    best = max(best, yi + (yj - yi) * (x - xi) / (xj - xi))
        return best

    grid = sorted({0.0, c_max} | {x for x, _ in pts if x < c_max})
    vals = [g(x) for x in grid]
    return sum((grid[k + 1] - grid[k]) * (vals[k] + vals[k + 1]) / 2 for k in range(len(grid) - 1)) / c_max


def test_aiq_agrees_with_a_brute_force_majorant_on_random_points():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 9))
        costs = rng.choice([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0], size=n)  # ties, 0, beyond c_max
        accs = np.round(rng.uniform(0, 1, size=n), 2)
        c_max = float(rng.choice([1.0, 3.0, 4.0, 6.0]))
        assert aiq(costs, accs, c_max) == pytest.approx(_brute_aiq(costs, accs, c_max), abs=1e-12)


def test_aiq_when_every_point_costs_more_than_the_range():
    # Hull (0,0)-(5,.8); the area stops at 4: the line reaches .64 there, (0 + .64) / 2 = .32.
    assert aiq([5], [0.8], c_max=4) == pytest.approx(0.32)
    # (6,.9) is under the line (0,0)-(5,.8) extended (slope .15 < .16): (5,.8) stays a vertex.
    assert aiq([5, 6], [0.8, 0.9], c_max=4) == pytest.approx(0.32)
    # A far point above that line takes over the hull: (0,0)-(8,.9), .45 at 4: (0 + .45) / 2.
    assert aiq([5, 8], [0.5, 0.9], c_max=4) == pytest.approx(0.225)


def test_aiq_points_with_equal_cost_keep_the_best():
    assert aiq([2, 2], [0.4, 0.8], c_max=4) == pytest.approx((0.8 + 1.6) / 4)
    assert aiq([2, 2], [0.8, 0.4], c_max=4) == pytest.approx((0.8 + 1.6) / 4)
    assert aiq([2, 2, 2], [0.8, 0.8, 0.8], c_max=4) == pytest.approx(0.6)


def test_aiq_with_accuracy_decreasing_in_cost_is_flat_after_the_cheapest_best():
    # (0,0)-(1,.9) then flat: the dearer, worse points count for nothing.
    xs, ys = upper_hull([1, 2, 3], [0.9, 0.6, 0.3])
    assert list(xs) == [0, 1] and list(ys) == [0, 0.9]
    assert aiq([1, 2, 3], [0.9, 0.6, 0.3], c_max=4) == pytest.approx((0.45 + 2.7) / 4)
    assert aiq([3, 2, 1], [0.3, 0.6, 0.9], c_max=4) == pytest.approx((0.45 + 2.7) / 4)  # order-free


def test_aiq_of_a_free_point_and_of_all_zero_accuracy():
    # A point at cost 0 lifts the hull's start: (0,.5)-(2,.9) then flat to 4.
    assert aiq([0, 2], [0.5, 0.9], c_max=4) == pytest.approx((1.4 + 1.8) / 4)
    assert aiq([1, 2], [0.0, 0.0], c_max=4) == 0.0
    with pytest.raises(ValueError):
        aiq([1], [0.5], c_max=0)


def test_gain_and_cost_save_edge_cases():
    # No point at or below the reference cost: Gain is None, CostSave may be negative.
    assert gain_at([5, 6], [0.9, 0.95], ref_cost=4, ref_acc=0.8) is None
    assert cost_save_at([5, 6], [0.9, 0.95], ref_cost=4, ref_acc=0.8) == pytest.approx(1 - 5 / 4)
    # No point reaches the reference accuracy: CostSave None, Gain negative.
    assert cost_save_at([1, 2], [0.5, 0.6], ref_cost=4, ref_acc=0.8) is None
    assert gain_at([1, 2], [0.5, 0.6], ref_cost=4, ref_acc=0.8) == pytest.approx(-0.2)
    # A point exactly at the reference cost counts; equal-cost points: the better one.
    assert gain_at([4, 4], [0.7, 0.85], ref_cost=4, ref_acc=0.8) == pytest.approx(0.05)
    assert cost_save_at([3, 3, 1], [0.7, 0.8, 0.79], ref_cost=4, ref_acc=0.8) == pytest.approx(0.25)
    # Own points, no hull interpolation: a chord through the reference cost does not count.
    assert gain_at([1, 5], [0.5, 1.0], ref_cost=3, ref_acc=0.6) == pytest.approx(-0.1)


def _metrics(rows, table, splits):
    return compute_metrics(rows, {"tiny": table}, splits)["datasets"]["tiny"]


def test_gain_none_and_negative_cost_save_through_compute_metrics(tiny):
    table, splits, rows = tiny
    # Seen pool, both knobs: call A then B (B final): $5/1k > best single B's $4/1k, accuracy .75.
    rows = [dict(r, models=["A", "B"], final="B") if r["pool"] == "seen" else r for r in rows]
    r = _metrics(rows, table, splits)["pools"]["seen"]["routers"]["r"]
    assert [p["usd_per_1k"] for p in r["points"]] == [5.0, 5.0]
    assert r["gain_at_best_single"] is None
    assert r["cost_save_at_best_single"] == pytest.approx(-0.25)
    assert r["aiq"] == pytest.approx((0.75 * 4 / 5) * 4 / 2 / 4)  # the chord to (5,.75), cut at 4


def test_a_model_called_twice_is_paid_twice_and_a_called_model_without_a_row_is_refused(tiny):
    table, splits, rows = tiny
    twice = [dict(r, models=["A", "A"], final="A") if r["pool"] == "seen" and r["knob"] == 1.0 else r for r in rows]
    r = _metrics(twice, table, splits)["pools"]["seen"]["routers"]["r"]
    assert r["points"][1]["usd_per_1k"] == pytest.approx(2.0) and r["points"][1]["accuracy"] == 0.25
    # A has no row for the first test prompt: a decision calling it there (even not as final) is refused.
    score, cost = table.score.copy(), table.cost.copy()
    i = table.prompt_index(rows[0]["prompt_id"])
    score[i, 0], cost[i, 0] = np.nan, np.nan
    holed = OutcomeTable(**{**{f: getattr(table, f) for f in (
        "name", "prompt_ids", "prompt_text", "domain", "task", "gold", "models", "prompt_tokens",
        "response_tokens", "input_price", "output_price")}, "score": score, "cost": cost})
    bad = [dict(r, models=["A", "B"], final="B") if r["prompt_id"] == rows[0]["prompt_id"] and r["pool"] == "seen" else r
           for r in rows]
    with pytest.raises(ValueError, match="not in its seen pool"):
        _metrics(bad, holed, splits)


def test_unseen_share_counts_final_decisions_only(tiny):
    table, splits, rows = tiny
    # Full pool, knob 1: call U first, then answer with A: U is paid for but the final is seen.
    rows = [dict(r, models=["U", "A"], final="A") if r["pool"] == "full" and r["knob"] == 1.0 else r for r in rows]
    f = _metrics(rows, table, splits)["pools"]["full"]["routers"]["r"]
    assert [p["unseen_share"] for p in f["points"]] == [0.75, 0.0]
    assert f["unseen_share"] == pytest.approx(0.375)
    assert f["points"][1]["usd_per_1k"] == pytest.approx(3.0)


def test_unseen_capture_is_none_when_the_oracle_gains_nothing_from_unseen_models(tiny):
    table, splits, rows = tiny
    # Make U dearer than B and never better than the best seen model on any prompt: the oracle
    # never picks it, so its full and seen AIQs are equal and the ratio is undefined.
    score = table.score.copy()
    score[:, 2] = np.minimum(score[:, 2], np.maximum(score[:, 0], score[:, 1]))
    cost = table.cost.copy()
    cost[:, 2] = 0.008
    dominated = OutcomeTable(**{**{f: getattr(table, f) for f in (
        "name", "prompt_ids", "prompt_text", "domain", "task", "gold", "models", "prompt_tokens",
        "response_tokens", "input_price", "output_price")}, "score": score, "cost": cost})
    m = _metrics(rows, dominated, splits)
    assert m["pools"]["full"]["oracle"]["aiq"] == m["pools"]["seen"]["oracle"]["aiq"]
    assert m["pools"]["full"]["oracle"]["unseen_gain"] == 0.0
    assert m["pools"]["full"]["routers"]["r"]["unseen_capture"] is None
    assert m["c_max_usd_per_1k"] == pytest.approx(8.0) and m["most_expensive_single"] == "U"


def _table(name, n_train, n_test, models, score_fn, cost_per_1k, missing=()):
    """A table of ``n_train`` + ``n_test`` prompts; ``missing`` = (split, k, model) rows left out."""
    train, test = [], []
    k = 0
    while len(train) < n_train or len(test) < n_test:
        pid = f"{name}/{k}"
        s = split_of(pid)
        if s == "train" and len(train) < n_train:
            train.append(pid)
        elif s == "test" and len(test) < n_test:
            test.append(pid)
        k += 1
    ids = train + test
    M = len(models)
    score = np.array([[score_fn(s, n, m) for m in models] for s, group in (("train", train), ("test", test))
                      for n in range(len(group))], dtype=np.float32)
    cost = np.tile(np.asarray(cost_per_1k) / 1000.0, (len(ids), 1))
    for s, n, m in missing:
        i = (0 if s == "train" else n_train) + n
        score[i, models.index(m)] = np.nan
        cost[i, models.index(m)] = np.nan
    ones = np.ones((len(ids), M), dtype=np.float32)
    table = OutcomeTable(
        name=name, prompt_ids=ids, prompt_text=ids, domain=["d"] * len(ids), task=["d"] * len(ids),
        gold=[""] * len(ids), models=list(models), score=score, cost=cost, prompt_tokens=ones,
        response_tokens=ones, input_price=np.ones(M), output_price=np.ones(M),
    )
    return table, test


def test_best_single_falls_back_and_non_single_models_set_no_cost_range():
    # 10 train + 10 test prompts. B: best train accuracy, single (19/20 rows), no row on test 0.
    # A: single, cheap. X: the most expensive, but only 15/20 rows: not a single model.
    acc = {"A": lambda s, n: float(n % 2 == 0), "B": lambda s, n: 1.0, "X": lambda s, n: 1.0}
    missing = [("test", 0, "B")] + [("train", n, "X") for n in range(5)]
    table, test = _table("fb", 10, 10, ["A", "B", "X"], lambda s, n, m: acc[m](s, n), [1.0, 4.0, 9.0], missing)
    splits = Splits(datasets={"fb": DatasetModels(seen=["A", "B", "X"], unseen=[])})
    rows = [{"router": "r", "dataset": "fb", "pool": "seen", "knob": 0.0, "prompt_id": p, "models": ["A"], "final": "A"}
            for p in test]
    m = compute_metrics(rows, {"fb": table}, splits)["datasets"]["fb"]
    # Best single B; on test 0 the next model in the ranking answers: A ($1/1k, score 1), the next
    # single model (references.py ranks single models first; X, a non-single tied with B on train
    # accuracy, would answer under a plain all-model ranking).
    bs = m["pools"]["seen"]["best_single"]
    assert bs["model"] == "B" and bs["accuracy"] == 1.0 and bs["usd_per_1k"] == pytest.approx((9 * 4 + 1) / 10)
    # The cost range is B's (with its fallback), not X's: X is not a single model.
    assert m["most_expensive_single"] == "B" and m["c_max_usd_per_1k"] == pytest.approx(3.7)
    assert set(m["pools"]["seen"]["single_models"]) == {"A", "B"}
    r = m["pools"]["seen"]["routers"]["r"]
    assert r["points"][0]["accuracy"] == 0.5 and r["points"][0]["usd_per_1k"] == pytest.approx(1.0)
    assert r["gain_at_best_single"] == pytest.approx(-0.5) and r["cost_save_at_best_single"] is None
    assert r["aiq"] == pytest.approx((0.25 + 0.5 * 2.7) / 3.7, abs=1e-6)
