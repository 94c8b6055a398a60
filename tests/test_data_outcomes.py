"""Outcome-table loading: good rows, malformed rows (file:line:field), unpriced models, splits."""

from __future__ import annotations

import gzip
import json
import logging

import numpy as np
import pytest

from routerl.data import OutcomeDataError, Splits, bucket_of, load_outcomes, split_of
from tests.conftest import shared_file


def row(pid="p1", model="m1", score=1.0, **extra):
    base = {
        "prompt_id": pid,
        "task": "gsm",
        "domain": "math",
        "prompt": f"question {pid}",
        "gold_answer": "4",
        "model": model,
        "score": score,
        "prompt_tokens": 10,
        "response_tokens": 20,
        "input_usd_per_mtok": 1.0,
        "output_usd_per_mtok": 2.0,
        "est_cost_usd": 5e-05,
    }
    base.update(extra)
    return base


def write(tmp_path, rows, name="t.jsonl", gz=False):
    path = tmp_path / (name + (".gz" if gz else ""))
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_loads_rows_into_dense_matrices(tmp_path):
    path = write(tmp_path, [row("p1", "a", 1.0), row("p1", "b", "0.0"), row("p2", "a", 0.0)], gz=True)
    t = load_outcomes(path)
    assert t.name == "t" and t.n_prompts == 2 and t.n_models == 2
    a, b = t.model_index("a"), t.model_index("b")
    assert t.score[t.prompt_index("p1"), b] == 0.0  # string score parsed
    assert np.isnan(t.score[t.prompt_index("p2"), b])  # no row
    assert t.pool(t.prompt_index("p1"), np.ones(2, bool)) == [a, b]
    assert t.pool(t.prompt_index("p2"), np.ones(2, bool)) == [a]


def test_cost_computed_when_missing_and_unpriced_models_left_out(tmp_path, caplog):
    rows = [
        row("p1", "a", est_cost_usd=None),
        row("p1", "free", input_usd_per_mtok="", output_usd_per_mtok="", est_cost_usd=""),
    ]
    with caplog.at_level(logging.WARNING):
        t = load_outcomes(write(tmp_path, rows))
    assert t.cost[0, t.model_index("a")] == pytest.approx((1.0 * 10 + 2.0 * 20) / 1e6)
    assert not t.priced[t.model_index("free")]
    assert t.pool(0, np.ones(2, bool)) == [t.model_index("a")]
    assert "free" in caplog.text and "no price" in caplog.text


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"score": "abc"}, "score"),
        ({"score": 1.5}, "score"),
        ({"score": None}, "score"),
        ({"prompt_id": ""}, "prompt_id"),
        ({"model": 3}, "model"),
        ({"est_cost_usd": -1}, "est_cost_usd"),
        ({"input_usd_per_mtok": float("nan")}, "input_usd_per_mtok"),
    ],
)
def test_malformed_row_names_file_line_and_field(tmp_path, bad, field):
    path = write(tmp_path, [row("p1", "a"), {**row("p2", "a"), **bad}])
    with pytest.raises(OutcomeDataError) as err:
        load_outcomes(path)
    assert f"{path}:2" in str(err.value) and f"'{field}'" in str(err.value)


def test_bad_json_duplicate_and_empty(tmp_path):
    with pytest.raises(OutcomeDataError, match=r":2: not valid JSON"):
        load_outcomes(write(tmp_path, [row(), "{oops"], name="a.jsonl"))
    with pytest.raises(OutcomeDataError, match=r":2: duplicate row"):
        load_outcomes(write(tmp_path, [row(), row()], name="b.jsonl"))
    with pytest.raises(OutcomeDataError, match="no rows"):
        load_outcomes(write(tmp_path, [""], name="c.jsonl"))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_outcomes(tmp_path / "missing.jsonl")


def test_most_common_prompt_text_wins(tmp_path):
    rows = [row("p1", "a", prompt="rare"), row("p1", "b", prompt="common"), row("p1", "c", prompt="common")]
    assert load_outcomes(write(tmp_path, rows)).prompt_text[0] == "common"


def test_responses_file_beside_table(tmp_path):
    write(tmp_path, [row("p1", "a")], name="d.jsonl")
    write(tmp_path, [{"prompt_id": "p1", "model": "a", "response": "The answer is 4."}], name="d_responses.jsonl", gz=True)
    t = load_outcomes(tmp_path / "d.jsonl")
    assert t.response(0, 0) == "The answer is 4."


def test_split_rule_matches_protocol():
    import hashlib

    for pid in ["gsm/1", "crux/crux-test-#0", "mmlupro/100", "x"]:
        b = int(hashlib.sha256(pid.encode()).hexdigest()[:8], 16) % 100
        assert bucket_of(pid) == b
        assert split_of(pid) == ("train" if b < 60 else "probe" if b < 70 else "val" if b < 80 else "test")


def test_splits_file_validation(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"datasets": {"d": {"seen_models": ["a"], "unseen_models": ["a"]}}}))
    with pytest.raises(ValueError, match="both seen and unseen"):
        Splits.load(p)
    p.write_text(json.dumps({"datasets": {"d": {"seen_models": "a"}}}))
    with pytest.raises(ValueError, match="datasets.d.seen_models"):
        Splits.load(p)


def test_shared_splits_reproduce_prompt_counts(zeroeval_table, shared_splits):
    raw = json.loads(shared_file("splits.json").read_text())
    counts = raw["datasets"]["zeroeval"]["prompt_counts"]
    for split, n in counts.items():
        assert zeroeval_table.prompts_in(split).size == n
    unseen = zeroeval_table.unseen_mask(shared_splits)
    assert unseen.sum() == len(raw["datasets"]["zeroeval"]["unseen_models"])
    assert not (unseen & zeroeval_table.seen_mask(shared_splits)).any()
