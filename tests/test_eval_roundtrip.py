"""``routerl eval`` end to end on the synthetic world: decision file -> metrics round trip, the
multi-round runner, and clear errors for bad arguments."""

from __future__ import annotations

import json

import numpy as np
import pytest

from routerl.cli import main
from routerl.data.synthetic import SyntheticWorld
from routerl.descriptors import build_descriptors
from routerl.eval.decisions import FIELDS, read_decisions
from routerl.eval.metrics import compute_metrics
from routerl.eval.runner import run_router
from routerl.routers.base import Decision, Router

from tests.conftest import shared_file

ROUTERS = "random,cheapest,best-single,oracle,knn-probe:k=5,cluster-probe:n_clusters=8"
KNOBS = "0,0.05,0.3,3"
LIMIT = 40


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    rc = main(["eval", "--out", str(out), "--router", ROUTERS, "--knobs", KNOBS, "--limit", str(LIMIT),
               "--embedder", "hash", "--shuffle-control"])
    assert rc == 0
    return out


def test_eval_writes_decisions_metrics_and_curves(eval_run):
    for name in ("decisions.jsonl", "decisions_shuffled.jsonl", "metrics.json", "curves.png"):
        assert (eval_run / name).stat().st_size > 0
    rows = read_decisions(eval_run / "decisions.jsonl")
    n_routers, n_pools, n_knobs = len(ROUTERS.split(",")), 2, len(KNOBS.split(","))
    assert len(rows) == n_routers * n_pools * n_knobs * LIMIT
    first = json.loads((eval_run / "decisions.jsonl").read_text().splitlines()[0])
    assert list(first) == list(FIELDS)
    assert {r["router"] for r in rows} == set(ROUTERS.split(","))
    shuffled = read_decisions(eval_run / "decisions_shuffled.jsonl")
    assert {r["pool"] for r in shuffled} == {"full"}


def test_metrics_recompute_from_the_decision_file_alone(eval_run):
    table, splits, _ = SyntheticWorld().build()
    rows = read_decisions(eval_run / "decisions.jsonl")
    shuffled = read_decisions(eval_run / "decisions_shuffled.jsonl")
    again = compute_metrics(rows, {table.name: table}, splits, shuffled)
    written = json.loads((eval_run / "metrics.json").read_text())
    assert again["datasets"] == written["datasets"]
    full = written["datasets"]["synthetic"]["pools"]["full"]["routers"]
    assert "unseen_capture_shuffled" in full["knn-probe:k=5"]
    # Price-only routers do not read evidence: the shuffle changes nothing for them.
    assert full["cheapest"]["unseen_capture_shuffled"] == full["cheapest"]["unseen_capture"]


def test_from_decisions_reproduces_the_metrics(eval_run, tmp_path, capsys):
    assert main(["eval", "--out", str(tmp_path), "--from-decisions", str(eval_run)]) == 0
    a = json.loads((eval_run / "metrics.json").read_text())["datasets"]
    b = json.loads((tmp_path / "metrics.json").read_text())["datasets"]
    assert a == b
    assert "| oracle |" in capsys.readouterr().out


class _TwoStep(Router):
    """Calls the cheapest candidate, then (at knob 0) the dearest, then accepts."""

    name = "two-step"
    max_rounds = 3

    def decide(self, query, candidates, knob, attempts=()):
        by_cost = sorted(candidates, key=lambda c: c.estimate_cost_usd(query.tokens))
        if not attempts:
            return Decision("route", by_cost[0].id)
        if len(attempts) == 1 and knob == 0.0:
            assert attempts[0].response  # the recorded answer is passed back
            return Decision("route", by_cost[-1].id)
        return Decision("accept", attempts[-1].model_id)


def test_multi_round_runner_records_every_call(synthetic_world):
    table, splits, _ = synthetic_world
    prompts = table.prompts_in("test")[:10]
    rows = list(run_router(_TwoStep(), "two-step", table, splits, prompts, build_descriptors(table), ["seen"], [0.0, 1.0]))
    assert len(rows) == 20
    for row in rows:
        assert row["models"][-1] == row["final"]
        assert len(row["models"]) == (2 if row["knob"] == 0.0 else 1)
    m = compute_metrics(rows, {table.name: table}, splits)["datasets"][table.name]["pools"]["seen"]["routers"]["two-step"]
    i = [table.prompt_index(r["prompt_id"]) for r in rows if r["knob"] == 0.0]
    j = [[table.model_index(x) for x in r["models"]] for r in rows if r["knob"] == 0.0]
    expected = np.mean([sum(table.cost[p, k] for k in ks) for p, ks in zip(i, j)]) * 1000
    assert m["points"][0]["usd_per_1k"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--router", "no-such-router"], "unknown router 'no-such-router'"),
        (["--router", "random", "--knobs", "0,abc"], "--knobs"),
        (["--router", "random", "--knobs", "-1"], "--knobs"),
        (["--router", "random", "--pools", "seen,everything"], "--pools"),
        (["--router", "random", "--limit", "0"], "--limit"),
        (["--router", "random", "--splits", "splits.json"], "--splits needs --data"),
        (["--router", "./no/such/checkpoint.pt"], "checkpoint"),
        (["--router", "knn-probe:k"], "key=value"),
        (["--router", "random", "--data", "/no/such/table.jsonl.gz"], "not found"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_error(tmp_path, capsys, argv, message):
    rc = main(["eval", "--out", str(tmp_path / "o"), "--embedder", "hash", "--limit", "5"] + argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("routerl: error:") and message in err


@pytest.mark.shared_data
def test_eval_on_a_slice_of_zeroeval(tmp_path):
    data, splits = shared_file("zeroeval.jsonl.gz"), shared_file("splits.json")
    rc = main(["eval", "--data", str(data), "--splits", str(splits), "--router", "best-single,oracle,cheapest",
               "--knobs", "0,1", "--limit", "25", "--embedder", "hash", "--out", str(tmp_path)])
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())["datasets"]["zeroeval"]
    assert m["pools"]["seen"]["best_single"]["model"] == "o1-mini-2024-09-12"
    assert m["most_expensive_single"] == "claude-3-opus-20240229"
    for pool in ("seen", "full"):
        routers = m["pools"][pool]["routers"]
        assert routers["oracle"]["aiq"] >= max(r["aiq"] for r in routers.values())


def test_paired_bootstrap_of_aiq_differences(eval_run, capsys):
    """``routerl.eval.paired``: AIQs equal the run's metrics; a router against itself differs by
    exactly 0; the oracle is ahead of random in every resample; bad names are clear errors."""
    from routerl.eval.paired import compare, main as paired_main, paired_bootstrap, read_runs

    table, splits, _ = SyntheticWorld().build()
    rows = read_decisions(eval_run / "decisions.jsonl")
    written = json.loads((eval_run / "metrics.json").read_text())["datasets"]["synthetic"]["pools"]
    results = compare(rows, {table.name: table}, splits, "oracle", ["random", "oracle", "knn-probe:k=5"], resamples=300)
    assert {(r.pool, r.baseline) for r in results} == {(p, b) for p in ("seen", "full") for b in ("random", "oracle", "knn-probe:k=5")}
    for r in results:
        assert r.n_prompts == LIMIT
        assert r.aiq_router == pytest.approx(written[r.pool]["routers"]["oracle"]["aiq"], abs=1e-6)
        assert r.aiq_baseline == pytest.approx(written[r.pool]["routers"][r.baseline]["aiq"], abs=1e-6)
        if r.baseline == "oracle":
            assert r.diff == 0 and r.se == 0 and r.low == r.high == 0 and r.ahead == 0
        if r.baseline == "random":
            assert r.diff > 0 and r.low > 0 and r.ahead == 1.0 and r.low <= r.diff <= r.high
    # resampling noise shrinks with more prompts: the same per-prompt gap over 4x the prompts
    rng = np.random.default_rng(0)
    a, b = (rng.random((2, 100)) < 0.7).astype(float), (rng.random((2, 100)) < 0.6).astype(float)
    costs = np.array([[1.0] * 100, [2.0] * 100])
    small = paired_bootstrap(a, costs, b, costs, 4.0, resamples=400)
    large = paired_bootstrap(np.tile(a, 4), np.tile(costs, 4), np.tile(b, 4), np.tile(costs, 4), 4.0, resamples=400)
    assert large[2] < small[2] * 0.7
    with pytest.raises(ValueError, match=r"no decisions of router 'nope' on synthetic .*of the routers asked for, they hold oracle there"):
        compare(read_runs([eval_run / "decisions.jsonl"], {"oracle", "nope"}, {table.name}), {table.name: table}, splits, "oracle", ["nope"])
    # two runs' files: a router is read from the first file that has it
    from routerl.eval.decisions import write_decisions

    other = eval_run / "other.jsonl"
    write_decisions([{**r, "router": "oracle-again"} for r in rows if r["router"] == "oracle"] + [r for r in rows if r["router"] == "random"], other)
    both = read_runs([eval_run / "decisions.jsonl", other], {"oracle", "oracle-again", "random"}, {table.name})
    assert len(both) == 3 * len([r for r in rows if r["router"] == "oracle"])  # random once, from the first file
    again = compare(both, {table.name: table}, splits, "oracle", ["oracle-again", "random"], resamples=50)
    assert all(r.diff == 0 for r in again if r.baseline == "oracle-again") and len(again) == 4
    assert paired_main([str(eval_run), str(eval_run / "missing.jsonl"), "--data", "x.jsonl.gz", "--router", "a", "--against", "b"]) == 2
    assert "no such decision file" in capsys.readouterr().err


def test_paired_bootstrap_of_unseen_gains(eval_run):
    """``--unseen-gain``: each router's gain equals its full minus seen AIQ in the run's metrics;
    a router against itself differs by exactly 0; the interval contains the point difference."""
    from routerl.eval.paired import compare_gain, gain_bootstrap

    table, splits, _ = SyntheticWorld().build()
    rows = read_decisions(eval_run / "decisions.jsonl")
    pools = json.loads((eval_run / "metrics.json").read_text())["datasets"]["synthetic"]["pools"]
    results = compare_gain(rows, {table.name: table}, splits, "knn-probe:k=5", ["random", "knn-probe:k=5", "oracle"], resamples=300)
    assert {(r.pool, r.baseline) for r in results} == {("full - seen", b) for b in ("random", "knn-probe:k=5", "oracle")}

    def gain(name):
        return pools["full"]["routers"][name]["aiq"] - pools["seen"]["routers"][name]["aiq"]

    for r in results:
        assert r.n_prompts == LIMIT
        assert r.aiq_router == pytest.approx(gain("knn-probe:k=5"), abs=1e-5)
        assert r.aiq_baseline == pytest.approx(gain(r.baseline), abs=1e-5)
        if r.baseline == "knn-probe:k=5":
            assert r.diff == 0 and r.se == 0
        else:
            assert r.se > 0 and r.low <= r.diff <= r.high
    # the same curve in both pools: no gain, in every resample
    rng = np.random.default_rng(1)
    s, c = (rng.random((2, 60)) < 0.7).astype(float), np.array([[1.0] * 60, [2.0] * 60])
    same = gain_bootstrap((s, c), (s, c), (s, c), (s, c), 4.0, resamples=100)
    assert same[:3] == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="no decisions of router 'nope'"):
        compare_gain(rows, {table.name: table}, splits, "knn-probe:k=5", ["nope"])
    with pytest.raises(ValueError, match="same, non-empty set of prompts"):
        gain_bootstrap((s, c), (s, c), (s[:, :5], c[:, :5]), (s, c), 4.0)


def test_unseen_evidence_sample_scores_drops_only_unseen_probe_results(synthetic_world, tmp_path):
    """``--unseen-evidence sample-scores``: unseen models are described by their per-domain
    sample scores alone; seen models and the seen pool are untouched."""
    from routerl.eval.unseen_evidence import with_unseen_evidence

    table, splits, _ = synthetic_world
    descs = build_descriptors(table)
    unseen = set(splits.unseen_models(table.name))
    thin = with_unseen_evidence(descs, unseen, "sample-scores")
    assert unseen and all(not thin[m].probe_results and thin[m].sample_scores == descs[m].sample_scores for m in unseen)
    assert all(thin[m] is descs[m] for m in descs if m not in unseen)
    assert with_unseen_evidence(descs, unseen, "probe") == descs
    with pytest.raises(ValueError, match="unseen evidence"):
        with_unseen_evidence(descs, unseen, "nothing")
    rows = {}
    for evidence in ("probe", "sample-scores"):
        out = tmp_path / evidence
        assert main(["eval", "--out", str(out), "--router", "knn-probe:k=5", "--knobs", KNOBS, "--limit", str(LIMIT),
                     "--embedder", "hash", "--unseen-evidence", evidence]) == 0
        rows[evidence] = read_decisions(out / "decisions.jsonl")
    by_pool = {e: {p: [r for r in rs if r["pool"] == p] for p in ("seen", "full")} for e, rs in rows.items()}
    assert by_pool["probe"]["seen"] == by_pool["sample-scores"]["seen"]
    assert by_pool["probe"]["full"] != by_pool["sample-scores"]["full"]
