"""Probing over real HTTP (a replay endpoint on 127.0.0.1 answering from the shared ZeroEval
responses): the probe-built descriptor of an unseen model equals the offline one, registration
in a catalog, resuming after a kill without re-asking finished probes, failures and validation."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from routerl.cli import main
from routerl.data.outcomes import OutcomeDataError
from routerl.descriptors import ModelDescriptor, build_descriptor, load_catalog
from routerl.live import register
from routerl.live.errors import ProviderError, ProviderUnavailable
from routerl.live.probe import ProbeItem, ProbeRecord, ProbeState, load_probe_set, run_probes
from routerl.live.provider import ChatProvider, ProviderAnswer
from routerl.live.register import catalog_lock, register_in_catalog
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


# -- gold answers are checked before anything is asked -----------------------------------------
def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_probe_set_gold_answers_are_checked_against_their_scorer_at_load(tmp_path):
    rows = [
        {"prompt_id": "gsm/0", "task": "gsm", "prompt": "1+1?", "gold_answer": "2"},
        {"prompt_id": "mm/1", "task": "mmlu_pro", "domain": "law", "prompt": "Which? (A) .. (J)", "gold_answer": "(c)"},
        {"prompt_id": "mm/2", "task": "mmlu_pro", "domain": "law", "prompt": "Which? (A) .. (J)", "gold_answer": "K"},
    ]
    path = write_rows(tmp_path / "p.jsonl", rows)
    with pytest.raises(OutcomeDataError, match=(
        r"p\.jsonl:3: prompt 'mm/2' \(task 'mmlu_pro', scorer 'choice'\): "
        r"field 'gold_answer': a choice answer must be one letter A-J, got 'K'"
    )):
        load_probe_set(path)
    assert [i.prompt_id for i in load_probe_set(path, limit=2)] == ["gsm/0", "mm/1"]  # rows not kept are not checked
    # the overrides the run will score with are the ones checked
    crux = write_rows(tmp_path / "crux.jsonl", [{"prompt_id": "crux/0", "task": "crux", "prompt": "f(1)?", "gold_answer": "[1, 2]"}])
    assert [i.gold_answer for i in load_probe_set(crux)] == ["[1, 2]"]  # exact takes any gold
    with pytest.raises(OutcomeDataError, match=r"crux\.jsonl:1: prompt 'crux/0' \(task 'crux', scorer 'choice'\)"):
        load_probe_set(crux, scorer_overrides={"crux": "choice"})


def test_models_probe_refuses_a_bad_gold_answer_before_any_request(replay, tmp_path, capsys):
    probes = write_rows(tmp_path / "p.jsonl", [
        {"prompt_id": "gsm/0", "task": "gsm", "prompt": "What is 1+1?", "gold_answer": "2"},
        {"prompt_id": "mm/1", "task": "mmlu_pro", "prompt": "Which one?", "gold_answer": "K"},
    ])
    catalog, state = tmp_path / "c.yaml", tmp_path / "s.jsonl"
    code = main(["models", *probe_args(replay, probes, "--catalog", str(catalog), "--state", str(state))])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("routerl: error: ")
    assert "p.jsonl:2: prompt 'mm/1' (task 'mmlu_pro', scorer 'choice'): field 'gold_answer'" in lines[0]
    assert replay.requests == 0 and not catalog.exists() and not state.exists()
    # --scorer overrides reach the check: a crux gold is no option letter
    crux = write_rows(tmp_path / "crux.jsonl", [{"prompt_id": "crux/0", "task": "crux", "prompt": "f(1)?", "gold_answer": "[1, 2]"}])
    code = main(["models", *probe_args(replay, crux, "--dry-run", "--scorer", "crux=choice")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "crux.jsonl:1: prompt 'crux/0' (task 'crux', scorer 'choice')" in lines[0]
    assert replay.requests == 0


# -- run_probes over a fake provider -----------------------------------------------------------
FAKE = "fake-model"


class FakeProvider:
    """Stands in for ChatProvider in run_probes: ``answer(prompt)`` returns a ProviderAnswer or
    raises; every prompt asked is recorded."""

    def __init__(self, answer):
        self.endpoint = SimpleNamespace(model_name=FAKE)
        self.model_id = FAKE
        self.answer = answer
        self.asked: list[str] = []
        self._lock = threading.Lock()

    def complete(self, messages, *, timeout_s=None):
        prompt = messages[-1]["content"]
        with self._lock:
            self.asked.append(prompt)
        return self.answer(prompt)


def gsm_item(n: int) -> ProbeItem:
    return ProbeItem(f"gsm/{n}", "gsm", "math", f"q{n}", str(n))


def right_answer(prompt: str) -> ProviderAnswer:
    return ProviderAnswer(text=prompt[1:], prompt_tokens=10, completion_tokens=5, cost_usd=0.001, latency_ms=12.0)


def test_run_probes_checks_every_gold_answer_before_asking():
    provider = FakeProvider(right_answer)
    items = [gsm_item(0), ProbeItem("mm/1", "mmlu_pro", "law", "Which?", "K")]
    with pytest.raises(ValueError, match=r"prompt 'mm/1' \(task 'mmlu_pro', scorer 'choice'\): field 'gold_answer'"):
        run_probes(provider, items, concurrency=1, show_progress=False)
    with pytest.raises(ValueError, match=r"prompt 'gsm/7' \(task 'gsm', scorer 'choice'\)"):
        run_probes(provider, [gsm_item(7)], scorer_overrides={"gsm": "choice"}, show_progress=False)
    assert provider.asked == []


def test_a_prompt_that_fails_in_any_way_is_a_failure_and_billed_failures_are_counted(tmp_path):
    def answer(prompt):
        if prompt == "q1":
            raise RuntimeError("parser blew up")
        if prompt == "q2":
            raise ProviderError(FAKE, "malformed response: no choices[0].message.content (billed 10+90 tokens)",
                                prompt_tokens=10, completion_tokens=90, cost_usd=0.25)
        if prompt == "q3":
            raise ProviderUnavailable(FAKE, "HTTP 503 (3 tries)", 503)
        return right_answer(prompt)

    state = ProbeState(tmp_path / "s.jsonl", FAKE)
    items = [gsm_item(n) for n in range(6)]
    run = run_probes(FakeProvider(answer), items, concurrency=2, state=state, show_progress=False)
    assert set(run.records) == {"gsm/0", "gsm/4", "gsm/5"} and run.asked == 6 and not run.complete
    assert run.failures == {
        "gsm/1": "error: RuntimeError: parser blew up",
        "gsm/2": "error: malformed response: no choices[0].message.content (billed 10+90 tokens)",
        "gsm/3": "unavailable: HTTP 503 (3 tries)",
    }
    assert run.failed_cost_usd == pytest.approx(0.25)
    assert set(state.load()) == {"gsm/0", "gsm/4", "gsm/5"}  # failures are not saved
    rerun_provider = FakeProvider(right_answer)
    rerun = run_probes(rerun_provider, items, concurrency=2, state=state, show_progress=False)
    assert sorted(rerun_provider.asked) == ["q1", "q2", "q3"] and rerun.complete and rerun.failed_cost_usd == 0.0
    assert (rerun.resumed, rerun.asked, len(rerun.records)) == (3, 3, 6)


def test_an_interrupt_saves_the_answers_already_received(tmp_path):
    """Ctrl-C while a probe is in flight: the run re-raises after that answer has come and been
    saved (it is paid for); the prompts not yet sent are never asked."""
    in_flight, in_flight_may_finish = threading.Event(), threading.Event()

    def answer(prompt):
        if prompt == "q0":
            in_flight.wait(20)  # q1 is sent before q0's answer comes
        if prompt == "q1":  # in flight when the run is interrupted
            in_flight.set()
            in_flight_may_finish.wait(20)
        return right_answer(prompt)

    def on_record(record):
        if record.prompt_id == "gsm/0":
            in_flight_may_finish.set()
            raise KeyboardInterrupt

    provider = FakeProvider(answer)
    state = ProbeState(tmp_path / "s.jsonl", FAKE)
    with pytest.raises(KeyboardInterrupt):
        run_probes(provider, [gsm_item(n) for n in range(5)], concurrency=2, state=state, show_progress=False,
                   on_record=on_record)
    assert sorted(provider.asked) == ["q0", "q1"]
    assert sorted(state.load()) == ["gsm/0", "gsm/1"]


def test_probe_spend_counts_what_failed_probes_were_billed(zeroeval_table, replay, slice_rows, tmp_path, monkeypatch, capsys):
    probes = write_probe_file(zeroeval_table, slice_rows[:3], tmp_path / "p.jsonl")
    state = tmp_path / "s.jsonl"
    billed_failure = zeroeval_table.prompt_text[slice_rows[0]]
    real_complete = ChatProvider.complete

    def complete(self, messages, **kwargs):
        if messages[-1]["content"] == billed_failure:  # an answer without content, billed
            raise ProviderError(self.model_id, "malformed response: no content (billed 100+1000 tokens)",
                                prompt_tokens=100, completion_tokens=1000, cost_usd=1.25)
        return real_complete(self, messages, **kwargs)

    monkeypatch.setattr(ChatProvider, "complete", complete)
    code = main(probe_args(replay, probes, "--dry-run", "--allow-partial", "--state", str(state)))
    err = capsys.readouterr().err
    answered = ProbeState(state, UNSEEN).load()
    assert code == 0 and len(answered) == 2 and replay.requests == 2
    spent = sum(r.cost_usd for r in answered.values()) + 1.25
    assert f"probed 2/3 prompts (0 from the state file, 3 asked, 1 failed); probe spend ${spent:.4f}" in err


# -- the state file after a killed run ---------------------------------------------------------
def probe_record(pid: str, model: str = "model-a", response: str = "") -> ProbeRecord:
    return ProbeRecord(pid, "gsm", "math", 1.0, "numeric", 10, 20, 0.0, 5.0, model, response)


def test_torn_last_line_is_cut_so_the_next_append_starts_a_line_of_its_own(tmp_path):
    state = ProbeState(tmp_path / "s.jsonl", "model-a")
    state.append(probe_record("p1"))
    complete = state.path.read_bytes()
    with open(state.path, "a") as handle:
        handle.write('{"prompt_id": "p2", "task": "gs')  # torn last line of a killed run
    assert list(state.load()) == ["p1"]
    assert state.path.read_bytes() == complete  # cut back to its last complete line
    state.append(probe_record("p2"))
    state.append(probe_record("p3"))
    assert list(ProbeState(state.path, "model-a").load()) == ["p1", "p2", "p3"]
    lines = state.path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["prompt_id"] for line in lines] == ["p1", "p2", "p3"]  # one record per line
    # a file that is nothing but a torn line is emptied
    only_torn = tmp_path / "t.jsonl"
    only_torn.write_text('{"prompt_id": "p9", "ta', encoding="utf-8")
    assert ProbeState(only_torn, "model-a").load() == {} and only_torn.read_bytes() == b""


def test_a_last_record_without_its_newline_gets_one(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(probe_record("p1").to_json(), encoding="utf-8")  # complete, but no newline
    state = ProbeState(path, "model-a")
    assert list(state.load()) == ["p1"]
    assert path.read_text(encoding="utf-8") == probe_record("p1").to_json() + "\n"
    # append starts a line of its own even without a load first
    path.write_text(probe_record("p1").to_json(), encoding="utf-8")
    state.append(probe_record("p2"))
    assert path.read_text(encoding="utf-8").splitlines() == [probe_record("p1").to_json(), probe_record("p2").to_json()]
    assert list(state.load()) == ["p1", "p2"]


def test_torn_records_inside_the_file_are_skipped_and_records_glued_onto_them_are_read(tmp_path):
    """A torn record that later appends followed: on its own line (skipped), or with the next
    record written onto the same line by an older version (that record is read)."""
    path = tmp_path / "s.jsonl"
    torn = '{"prompt_id": "p2", "task": "gs'
    path.write_text(
        probe_record("p1").to_json() + "\n" + torn + "\n" + probe_record("p3").to_json() + "\n"
        + torn + probe_record("p4").to_json() + "\n" + probe_record("p5").to_json() + "\n",
        encoding="utf-8",
    )
    before = path.read_bytes()
    assert list(ProbeState(path, "model-a").load()) == ["p1", "p3", "p4", "p5"]
    assert path.read_bytes() == before  # nothing to repair: the file ends on a newline


@pytest.mark.parametrize("line", [
    "not json at all",
    "[1, 2, 3]",
    json.dumps({"prompt_id": "x/1", "task": "gsm", "prompt": "1+1?", "gold_answer": "2"}),  # a probe-set row
])
def test_a_line_that_is_not_a_probe_record_is_still_an_error(tmp_path, line):
    path = tmp_path / "s.jsonl"
    path.write_text(probe_record("p1").to_json() + "\n" + line + "\n" + probe_record("p3").to_json() + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"s\.jsonl:2: not a probe record"):
        ProbeState(path, "model-a").load()



def test_only_a_torn_record_is_cut_from_the_end_of_the_state_file(tmp_path):
    path = tmp_path / "s.jsonl"
    first = probe_record("p1").to_json() + "\n"
    path.write_text(first + '{"pro', encoding="utf-8")  # killed a few bytes into a record
    assert list(ProbeState(path, "model-a").load()) == ["p1"] and path.read_text(encoding="utf-8") == first
    path.write_text(first + "my notes about this run", encoding="utf-8")  # no newline, but no record either
    with pytest.raises(ValueError, match=r"s\.jsonl:2: not a probe record"):
        ProbeState(path, "model-a").load()
    assert path.read_text(encoding="utf-8") == first + "my notes about this run"

def test_a_probe_set_given_as_the_state_file_is_refused_and_left_as_it_is(tmp_path):
    """A complete JSON line is never a torn record: a probe set passed as --state is an error,
    not an empty state whose last row is cut off."""
    path = tmp_path / "probes.jsonl"
    rows = [{"prompt_id": f"x/{n}", "task": "gsm", "prompt": f"{n}+1?", "gold_answer": str(n + 1)} for n in range(3)]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")  # no final newline
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"probes\.jsonl:1: not a probe record"):
        ProbeState(path, "model-a").load()
    assert path.read_bytes() == before


def test_answers_with_unicode_line_separators_survive_a_reload(tmp_path):
    """json.dumps leaves U+2028/U+2029/U+0085 as they are: they must not split a record."""
    state = ProbeState(tmp_path / "s.jsonl", "model-a")
    texts = {"p1": "first\u2028second", "p2": "a\u2029b\x85c", "p3": "plain"}
    for pid, text in texts.items():
        state.append(probe_record(pid, response=text))
    assert {pid: r.response for pid, r in state.load().items()} == texts


# -- concurrent registrations in one catalog ---------------------------------------------------
def slow_catalog_reads(monkeypatch, delay_s: float) -> None:
    """Widen the window between reading the catalog and writing it back, so registrations that
    are not serialized would overwrite each other."""
    real = register._catalog_models

    def slow(*args, **kwargs):
        models = real(*args, **kwargs)
        time.sleep(delay_s)
        return models

    monkeypatch.setattr(register, "_catalog_models", slow)


def test_concurrent_catalog_registrations_from_threads_all_land(tmp_path, monkeypatch):
    catalog = tmp_path / "c.yaml"
    register_in_catalog(ModelDescriptor("m-first", 1, 2), catalog)
    slow_catalog_reads(monkeypatch, 0.05)
    ids = [f"m-{n}" for n in range(6)]
    start = threading.Barrier(len(ids))
    errors: list[BaseException] = []

    def worker(model_id):
        try:
            start.wait(10)
            register_in_catalog(ModelDescriptor(model_id, 1, 2), catalog)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(m,)) for m in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sorted(m.id for m in load_catalog(catalog)) == sorted(["m-first", *ids])


def _register_after(start, catalog: str, model_id: str) -> None:
    start.wait(10)
    register_in_catalog(ModelDescriptor(model_id, 1, 2), catalog)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_concurrent_catalog_registrations_from_processes_all_land(tmp_path, monkeypatch):
    catalog = tmp_path / "c.yaml"
    slow_catalog_reads(monkeypatch, 0.1)  # inherited by the forked processes
    ctx = multiprocessing.get_context("fork")
    ids = [f"p-{n}" for n in range(3)]
    start = ctx.Barrier(len(ids))
    procs = [ctx.Process(target=_register_after, args=(start, str(catalog), m)) for m in ids]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * len(ids)
    assert sorted(m.id for m in load_catalog(catalog)) == ids


def test_a_registration_waits_for_the_catalog_lock(tmp_path):
    catalog = tmp_path / "c.yaml"
    done = threading.Event()
    worker = threading.Thread(target=lambda: (register_in_catalog(ModelDescriptor("m-late", 1, 2), catalog), done.set()))
    with catalog_lock(catalog):
        worker.start()
        assert not done.wait(0.3)  # held: the registration cannot read or write the catalog
        assert not catalog.exists()
    worker.join(30)
    assert done.is_set() and [m.id for m in load_catalog(catalog)] == ["m-late"]
    assert (tmp_path / "c.yaml.lock").exists()  # the lock file stays (removing it would race)
