"""Probing over real HTTP (a replay endpoint on 127.0.0.1 answering from the shared ZeroEval
responses): the probe-built descriptor of an unseen model equals the offline one, registration
in a catalog, resuming after a kill without re-asking finished probes, failures and validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from routerl.cli import main
from routerl.data.outcomes import OutcomeDataError
from routerl.descriptors import build_descriptor, load_catalog
from routerl.live.probe import ProbeRecord, ProbeState, load_probe_set
from routerl.live.replay import Fault
from tests.test_live_support import UNSEEN, probe_slice, replay, replay_book  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.shared_data


def write_probe_file(table, rows, path: Path) -> Path:
    """The probe set file: the slice's rows in the documented format (prompt text, gold)."""
    with open(path, "w", encoding="utf-8") as handle:
        for i in rows:
            handle.write(json.dumps({
                "prompt_id": table.prompt_ids[i], "task": table.task[i], "domain": table.domain[i],
                "prompt": table.prompt_text[i], "gold_answer": table.gold[i],
            }) + "\n")
    return path


def probe_args(server, probes: Path, *extra: str, model: str = UNSEEN) -> list[str]:
    j_prices = {"claude-3-5-haiku-20241022": ("1.0", "5.0")}
    ip, op = j_prices.get(model, ("1.0", "1.0"))
    return [
        "probe", "--endpoint", server.base_url, "--model-name", model, "--api-key-env", "REPLAY_KEY",
        "--id", model, "--input-price", ip, "--output-price", op, "--probes", str(probes),
        "--timeout", "10", "--no-progress", *extra,
    ]


@pytest.fixture(autouse=True)
def replay_key(monkeypatch):
    monkeypatch.setenv("REPLAY_KEY", "replay-key-not-checked")


@pytest.fixture()
def slice_rows(zeroeval_table):
    rows = probe_slice(zeroeval_table)
    assert len(rows) == 30
    return rows


def test_probe_builds_the_offline_descriptor_and_registers_it(zeroeval_table, replay, slice_rows, tmp_path, capsys):
    probes = write_probe_file(zeroeval_table, slice_rows, tmp_path / "probes.jsonl")
    catalog = tmp_path / "catalog.yaml"
    code = main(probe_args(replay, probes, "--catalog", str(catalog), "--concurrency", "4", "--state", str(tmp_path / "s.jsonl")))
    assert code == 0
    assert replay.requests == 30  # one request per probe prompt
    (live,) = load_catalog(catalog)
    offline = build_descriptor(zeroeval_table, UNSEEN, slice_rows)
    assert live.sample_scores == offline.sample_scores
    assert live.sample_counts == offline.sample_counts
    assert live.probe_results == offline.probe_results
    assert live.mean_output_tokens == offline.mean_output_tokens
    assert (live.id, live.input_price_per_mtok, live.output_price_per_mtok) == (offline.id, 1.0, 5.0)
    assert live.endpoint.base_url == replay.base_url and live.endpoint.api_key_env == "REPLAY_KEY"
    assert live.latency_ms > 0
    assert set(live.sample_counts) == {"math_grade_school", "math_competition", "code_reasoning"}
    out = capsys.readouterr()
    assert "probed 30/30 prompts (0 from the state file, 30 asked, 0 failed)" in out.err
    assert "replay-key-not-checked" not in out.out + out.err + catalog.read_text()
    # the same id again is refused unless --replace
    assert main(probe_args(replay, probes, "--catalog", str(catalog), "--state", str(tmp_path / "s.jsonl"))) == 2
    assert "already in the catalog" in capsys.readouterr().err
    assert main(probe_args(replay, probes, "--catalog", str(catalog), "--replace", "--state", str(tmp_path / "s.jsonl"))) == 0
    assert replay.requests == 30  # every probe came from the state file: no new request


def test_resume_after_kill_asks_only_unfinished_probes(zeroeval_table, replay, slice_rows, tmp_path):
    """Kill a probe run (SIGKILL) after 8 answers; the rerun asks exactly the other 22."""
    probes = write_probe_file(zeroeval_table, slice_rows, tmp_path / "probes.jsonl")
    state = tmp_path / "state.jsonl"
    finished_before_kill = 8
    stuck, release = threading.Event(), threading.Event()

    def gate(hit):  # answer 8 requests, then hold the 9th until the run is killed
        if hit > finished_before_kill:
            stuck.set()
            release.wait(20)
        return None

    replay.faults.plan[UNSEEN] = gate
    env = dict(os.environ, REPLAY_KEY="k")
    proc = subprocess.Popen(
        [sys.executable, "-m", "routerl", *probe_args(replay, probes, "--dry-run", "--concurrency", "1", "--state", str(state))],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        assert stuck.wait(30), "the probe run never reached the 9th request"
    finally:
        proc.kill()
        proc.wait(10)
        release.set()
    replay.faults.clear()
    done = ProbeState(state, UNSEEN).load()
    assert len(done) == finished_before_kill
    first_hits = dict(replay.hits)

    catalog = tmp_path / "c.yaml"
    assert main(probe_args(replay, probes, "--catalog", str(catalog), "--concurrency", "3", "--state", str(state))) == 0
    rerun_hits = {k: v - first_hits.get(k, 0) for k, v in replay.hits.items() if v - first_hits.get(k, 0)}
    asked_again = {pid for (_, pid) in rerun_hits}
    assert len(asked_again) == 30 - finished_before_kill
    assert not asked_again & set(done)  # no finished probe was asked again
    assert all(v == 1 for v in rerun_hits.values())
    (live,) = load_catalog(catalog)
    assert live.probe_results == build_descriptor(zeroeval_table, UNSEEN, slice_rows).probe_results


def test_failed_probes_block_registration_until_a_rerun(zeroeval_table, replay, slice_rows, tmp_path, capsys):
    probes = write_probe_file(zeroeval_table, slice_rows[:6], tmp_path / "p.jsonl")
    catalog, state = tmp_path / "c.yaml", tmp_path / "s.jsonl"
    replay.faults.plan[UNSEEN] = lambda hit: Fault(status=500) if hit in (1, 2, 3) else None  # first probe: 3 x 500
    code = main(probe_args(replay, probes, "--catalog", str(catalog), "--concurrency", "1", "--retries", "3", "--backoff", "0.01", "--state", str(state)))
    err = capsys.readouterr().err
    assert code == 1 and not catalog.exists()
    assert "1 failed" in err and "HTTP 500 (3 tries)" in err and "not registered" in err
    assert main(probe_args(replay, probes, "--catalog", str(catalog), "--state", str(state))) == 0
    assert "(5 from the state file, 1 asked, 0 failed)" in capsys.readouterr().err
    assert len(load_catalog(catalog)[0].probe_results) == 6


def test_dry_run_registers_nothing_and_a_target_is_required(zeroeval_table, replay, slice_rows, tmp_path, capsys):
    probes = write_probe_file(zeroeval_table, slice_rows[:3], tmp_path / "p.jsonl")
    assert main(probe_args(replay, probes)) == 2
    assert "--catalog FILE or --register TARGET" in capsys.readouterr().err
    assert replay.requests == 0
    assert main(probe_args(replay, probes, "--dry-run", "--json", "--full")) == 0
    out = capsys.readouterr()
    shown = json.loads(out.out)
    assert shown["id"] == UNSEEN and len(shown["probe_results"]) == 3 and "dry run" in out.err
    assert not list(tmp_path.glob("*.yaml"))


def test_state_file_of_another_model_is_refused(tmp_path):
    state = ProbeState(tmp_path / "s.jsonl", "model-a")
    state.append(ProbeRecord("p1", "gsm", "math", 1.0, "numeric", 10, 20, 0.0, 5.0, "model-a"))
    with open(state.path, "a") as handle:
        handle.write('{"prompt_id": "p2", "task": "gs')  # torn last line of a killed run
    assert list(state.load()) == ["p1"]
    with pytest.raises(ValueError, match="field 'model_name' is 'model-a'"):
        ProbeState(state.path, "model-b").load()


def test_probe_set_validation_names_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt_id": "x/1", "task": "gsm", "prompt": "1+1?"}) + "\n")
    with pytest.raises(OutcomeDataError, match=r"bad.jsonl:1: field 'gold_answer' is missing"):
        load_probe_set(bad)
    bad.write_text(json.dumps({"prompt_id": "x/1", "gold_answer": "2"}) + "\n")
    with pytest.raises(OutcomeDataError, match="field 'prompt' is missing"):
        load_probe_set(bad)
    good = tmp_path / "good.jsonl"
    rows = [{"prompt_id": f"x/{n}", "task": "gsm", "prompt": f"{n}+1?", "gold_answer": str(n + 1), "model": m}
            for n in range(5) for m in ("a", "b")]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = load_probe_set(good, limit=3)
    assert [i.prompt_id for i in items] == ["x/0", "x/1", "x/2"]  # one item per prompt id
    assert items[0].domain == "gsm"  # domain falls back to the task, as in load_outcomes
    rows = [{"prompt_id": f"{t}/{n}", "task": t, "prompt": "?", "gold_answer": "1"} for n in range(4) for t in ("gsm", "crux")]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert [i.prompt_id for i in load_probe_set(good, per_task=2)] == ["gsm/0", "crux/0", "gsm/1", "crux/1"]
