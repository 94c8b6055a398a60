"""The Complete RPC end to end: a real ``python -m routerl serve`` process on loopback whose
models carry endpoints pointing at a replay server (recorded ZeroEval answers over real HTTP).

* ``routerl probe --register`` probes a model no default catalog had (the unseen
  ``claude-3-5-haiku-20241022``) on 21 probe prompts and registers it with the running server;
  ``ListModels`` shows it, and the very next ``Complete`` for a query its descriptor wins answers
  with it (``routerl models probe`` is the same command);
* a provider answering 500s, or hanging past the provider timeout: the fallback is in the
  attempts (unary and streamed); every provider failing: UNAVAILABLE listing the attempts;
* candidates without an endpoint are skipped (FAILED_PRECONDITION when none is left);
* a key budget running out: the server refuses (FAILED_PRECONDITION, ``routerl-stop: refused``);
  the ``cheapest`` policy in-process; the key from metadata, the field, or the token's role;
* spend counters on the metrics endpoint; ``routerl complete --target``.

Needs ``../shared/data`` (skipped without it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from routerl.cli import main
from routerl.client import CompleteAttempt, CompleteResult, RouterClient, RouterClientError
from routerl.descriptors import Endpoint, ModelDescriptor, build_descriptor
from routerl.descriptors.catalog import save_catalog
from routerl.live.provider import call_cost_usd
from routerl.live.replay import Fault, ReplayServer
from routerl.routers.base import Query
from routerl.server.proto import router_pb2 as pb
from routerl.server.proto import router_pb2_grpc as pb_grpc
from tests.test_live_support import CHEAP, FLAKY, STRONG, UNSEEN, ScriptedFaults, probe_slice
from tests.test_server_observe import free_port, scrape

pytestmark = pytest.mark.shared_data

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "ROUTERL_TEST_REPLAY_KEY"  # the replay server wants this key: the server process reads it
KEY = "replay-secret-1"
NO_ENDPOINT = "acme/no-endpoint"  # the best code model on paper, but nothing to call
KNOWN = (CHEAP, STRONG, FLAKY)
PROVIDER_TIMEOUT = 0.5
START_TIMEOUT = 30.0


class ServerProcess:
    """``python -m routerl serve --port 0 --metrics-port P`` in a subprocess."""

    def __init__(self, tmp: Path, catalog: Path, *extra: str):
        self.log = tmp / "server.log"
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **{KEY_ENV: KEY})
        self.metrics_port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "routerl", "serve", "--host", "127.0.0.1", "--port", "0", "--db", str(tmp / "r.db"),
             "--catalog", str(catalog), "--metrics-port", str(self.metrics_port), *extra],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=open(self.log, "ab"), text=True,
        )  # fmt: skip
        lines = self._lines(2)
        if len(lines) < 2 or not lines[0].startswith("listening on ") or not lines[1].startswith("metrics on "):
            self.proc.kill()
            raise AssertionError(f"server did not start: {lines!r}\n{self.log.read_text()}")
        self.target = lines[0].split("listening on ", 1)[1].strip()

    def _lines(self, n: int) -> list[str]:
        box: list[str] = []

        def read():
            for _ in range(n):
                box.append(self.proc.stdout.readline())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        return list(box)

    def client(self, **options) -> RouterClient:
        return RouterClient(self.target, timeout=20.0, **options)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def book(zeroeval_table):
    from tests import test_live_support

    if "book" not in test_live_support._BOOKS:
        from routerl.live.replay import ReplayBook, load_responses
        from tests.conftest import shared_file

        responses = load_responses(shared_file("zeroeval_responses.jsonl.gz"), test_live_support.REPLAY_MODELS)
        test_live_support._BOOKS["book"] = ReplayBook.from_table(zeroeval_table, responses, test_live_support.REPLAY_MODELS)
    return test_live_support._BOOKS["book"]


@pytest.fixture(scope="module")
def replay(book):
    faults = ScriptedFaults()
    server = ReplayServer(book, fault=faults, api_key=KEY).start()
    server.faults = faults
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clear_faults(request):
    yield
    if "replay" in request.fixturenames:
        request.getfixturevalue("replay").faults.clear()


@pytest.fixture(scope="module")
def offline(zeroeval_table, replay):
    """The catalog's models: offline descriptors of three replayed models with endpoints, and
    one model without an endpoint."""
    models = {m: build_descriptor(zeroeval_table, m).with_changes(endpoint=Endpoint(replay.base_url, m, KEY_ENV)) for m in KNOWN}
    models[NO_ENDPOINT] = ModelDescriptor(
        NO_ENDPOINT, 0.01, 0.01, sample_scores={"code_reasoning": 0.99, "math_grade_school": 0.1, "math_competition": 0.1},
        sample_counts={"code_reasoning": 100, "math_grade_school": 100, "math_competition": 100}, mean_output_tokens=200.0,
    )  # fmt: skip
    return models


def text_of(table, i: int) -> tuple[str, str]:
    return table.prompt_text[i], table.domain[i]


@pytest.fixture(scope="module")
def budget_prompt(zeroeval_table, offline, book):
    """A test-split crux prompt whose recorded gpt-4o-mini call costs at least its estimate, and
    that cost: a key with exactly this budget can afford one call, then it is spent."""
    t = zeroeval_table
    j = t.model_index(CHEAP)
    desc = offline[CHEAP]
    for i in t.prompts_in("test"):
        if t.task[i] != "crux" or book.lookup(CHEAP, t.prompt_text[i]) is None:
            continue
        cost = call_cost_usd(int(t.prompt_tokens[i, j]), int(t.response_tokens[i, j]), desc.input_price_per_mtok, desc.output_price_per_mtok)
        if cost >= desc.estimate_cost_usd(Query(t.prompt_text[i]).tokens) * 1.01:
            return int(i), cost
    pytest.fail("no crux test prompt costs more than its estimate")


@pytest.fixture(scope="module")
def server(tmp_path_factory, offline, budget_prompt):
    tmp = tmp_path_factory.mktemp("complete")
    catalog = tmp / "catalog.yaml"
    save_catalog(list(offline.values()), catalog)
    _, cost = budget_prompt
    proc = ServerProcess(
        tmp, catalog, "--provider-timeout", str(PROVIDER_TIMEOUT), "--provider-retries", "2", "--provider-backoff", "0.01",
        "--complete-max-rounds", "2", "--key-budget", f"tenant-a={cost!r}", "--key-budget-policy", "refuse",
    )  # fmt: skip
    yield proc
    proc.stop()


def gsm_prompt(table, book) -> int:
    """A test-split gsm prompt with recorded answers of haiku, 4o-mini and sonnet (Qwen has no gsm)."""
    for i in table.prompts_in("test"):
        if table.task[i] == "gsm" and all(book.lookup(m, table.prompt_text[i]) for m in (UNSEEN, CHEAP, STRONG)):
            return int(i)
    raise AssertionError("no gsm test prompt answered by haiku, 4o-mini and sonnet")


def statuses(result: CompleteResult) -> list[tuple[str, str, bool]]:
    return [(a.model_id, a.status, a.fallback) for a in result.attempts]


# -- tests -------------------------------------------------------------------------------------
def test_probe_register_then_complete_answers_with_the_new_model(server, replay, zeroeval_table, book, tmp_path, monkeypatch, capsys):
    table = zeroeval_table
    monkeypatch.setenv(KEY_ENV, KEY)
    rows = probe_slice(table, UNSEEN, per_task=7)
    assert len(rows) == 21
    probes = tmp_path / "probes.jsonl"
    probes.write_text("".join(json.dumps({
        "prompt_id": table.prompt_ids[i], "task": table.task[i], "domain": table.domain[i],
        "prompt": table.prompt_text[i], "gold_answer": table.gold[i]}) + "\n" for i in rows))  # fmt: skip
    text, domain = text_of(table, gsm_prompt(table, book))

    with server.client() as client:
        assert UNSEEN not in {m.id for m in client.list_models()}
        before = client.complete(text, domain=domain, mode="quality")
        assert before.model_id == STRONG and before.stop == "accepted"  # the best known gsm model

    probe = ["--endpoint", replay.base_url, "--model-name", UNSEEN, "--api-key-env", KEY_ENV, "--id", UNSEEN,
             "--input-price", "0.8", "--output-price", "4", "--probes", str(probes), "--no-progress", "--register", server.target]
    assert main(["probe", *probe]) == 0
    assert replay.model_hits[UNSEEN] == 21
    assert f"registered {UNSEEN} with {server.target}" in capsys.readouterr().err

    with server.client() as client:
        listed = {m.id: m for m in client.list_models()}
        assert UNSEEN in listed and listed[UNSEEN].endpoint == Endpoint(replay.base_url, UNSEEN, KEY_ENV)
        assert listed[UNSEEN].sample_counts == {"code_reasoning": 7, "math_competition": 7, "math_grade_school": 7}
        assert client.route(text, domain=domain, mode="quality").model_id == UNSEEN
        after = client.complete(text, domain=domain, mode="quality", request_id="req-new-model")
    assert after.model_id == UNSEEN and after.answer == book.lookup(UNSEEN, text).text
    assert statuses(after) == [(UNSEEN, "ok", False)] and after.stop == "accepted"
    (attempt,) = after.attempts
    assert attempt.prompt_tokens > 0 and attempt.completion_tokens > 0 and attempt.latency_ms > 0
    assert attempt.cost_usd == pytest.approx(after.total_cost_usd) and after.total_cost_usd > 0
    assert after.request_id == "req-new-model" and after.router == "descriptor-score" and after.key_id == "anonymous"

    # registering again: refused before a single probe is sent, unless --replace (the alias
    # `routerl models probe` is the same command)
    assert main(["models", "probe", *probe]) == 2
    assert "already registered" in capsys.readouterr().err and replay.model_hits[UNSEEN] == 22  # only the Complete call
    assert main(["models", "probe", *probe, "--replace", "--tag", "re-probed"]) == 0
    with server.client() as client:
        assert client.get_model(UNSEEN).tags == ("re-probed",)


def test_fallback_when_a_provider_fails_or_hangs(server, replay, zeroeval_table, book):
    text, domain = text_of(zeroeval_table, zeroeval_table.prompt_index("crux/crux-test-#102"))
    with server.client() as client:
        order = [m for m, _ in client.route(text, domain=domain, mode="quality", allow=KNOWN).ranking]
        chosen, second = order[0], order[1]

        replay.faults.always(chosen, Fault(status=500))
        result = client.complete(text, domain=domain, mode="quality", allow=KNOWN)
        assert statuses(result) == [(chosen, "failed", False), (second, "ok", True)]
        assert result.attempts[0].reason == "unavailable: HTTP 500 (2 tries)" and result.attempts[0].cost_usd == 0
        assert result.fallback and result.model_id == second and result.answer == book.lookup(second, text).text

        replay.faults.always(chosen, Fault(delay_s=5.0))  # hangs past the 0.5 s provider timeout
        events = list(client.complete_stream(text, domain=domain, mode="quality", allow=KNOWN))
    assert [type(e) for e in events] == [CompleteAttempt, CompleteAttempt, CompleteResult]
    first, answered, final = events
    assert (first.model_id, first.status, first.reason) == (chosen, "failed", f"timeout: no answer within {PROVIDER_TIMEOUT:g} s")
    assert PROVIDER_TIMEOUT * 1000 <= first.latency_ms < 3000
    assert (answered.model_id, answered.status, answered.fallback) == (second, "ok", True)
    assert final.attempts == [first, answered] and final.model_id == second


def test_every_provider_failing_is_unavailable_with_the_attempts(server, replay, zeroeval_table):
    text, _ = text_of(zeroeval_table, zeroeval_table.prompt_index("crux/crux-test-#102"))
    for m in KNOWN:
        replay.faults.always(m, Fault(status=503))
    with server.client() as client, pytest.raises(RouterClientError) as err:
        client.complete(text, mode="quality", allow=KNOWN)
    exc = err.value
    assert exc.code == grpc.StatusCode.UNAVAILABLE and exc.stop == "failed" and exc.request_id
    assert "every candidate failed" in exc.details
    for m in KNOWN:
        assert f"{m} failed" in exc.details
    assert exc.details.count("unavailable: HTTP 503 (2 tries)") == 3

    # streamed: the three failed attempts arrive, then the same status
    events = []
    with server.client() as client, pytest.raises(RouterClientError) as err:
        for event in client.complete_stream(text, mode="quality", allow=KNOWN):
            events.append(event)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE and err.value.stop == "failed"
    assert sorted((e.model_id, e.status) for e in events) == sorted((m, "failed") for m in KNOWN)


def test_candidates_without_an_endpoint_are_skipped(server, replay, zeroeval_table, book):
    text, domain = text_of(zeroeval_table, zeroeval_table.prompt_index("crux/crux-test-#102"))
    with server.client() as client:
        route = client.route(text, domain=domain, mode="quality", deny=[UNSEEN])
        assert route.model_id == NO_ENDPOINT  # Route does not care about endpoints
        result = client.complete(text, domain=domain, mode="quality", deny=[UNSEEN])
        assert NO_ENDPOINT not in {a.model_id for a in result.attempts}
        assert result.model_id == route.ranking[1][0] and result.answer == book.lookup(result.model_id, text).text
        with pytest.raises(RouterClientError) as err:
            client.complete(text, allow=[NO_ENDPOINT])
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and err.value.stop == "no_endpoint"
    assert "no candidate has an endpoint" in err.value.details and NO_ENDPOINT in err.value.details


def test_key_budget_runs_out_and_the_server_refuses(server, replay, zeroeval_table, budget_prompt):
    i, cost = budget_prompt
    text, _ = text_of(zeroeval_table, i)
    before = scrape(server.metrics_port)
    with server.client() as client:
        first = client.complete(text, allow=[CHEAP], key_id="tenant-a")
        assert first.model_id == CHEAP and first.total_cost_usd == cost and first.key_id == "tenant-a"
        with grpc.insecure_channel(server.target) as channel:  # the key from the routerl-key-id metadata
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.RouterStub(channel).Complete(pb.CompleteRequest(query=text, allow=[CHEAP]), timeout=10,
                                                     metadata=(("routerl-key-id", "tenant-a"),))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "budget of key tenant-a" in err.value.details() and "is spent" in err.value.details()
        assert ("routerl-stop", "refused") in tuple(err.value.trailing_metadata())
        with pytest.raises(RouterClientError) as refused:
            client.complete(text, allow=[CHEAP], key_id="tenant-a")
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION and refused.value.stop == "refused"
        other = client.complete(text, allow=[CHEAP], key_id="tenant-b")  # other keys are unaffected
        assert other.model_id == CHEAP and other.key_id == "tenant-b"
        # a request budget below every estimate: nothing is called
        with pytest.raises(RouterClientError) as poor:
            client.complete(text, allow=list(KNOWN), budget_usd=1e-9)
        assert poor.value.code == grpc.StatusCode.FAILED_PRECONDITION and poor.value.stop == "budget"
        with pytest.raises(RouterClientError) as bad:
            client.complete(text, key_id="not a key!")
        assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT and bad.value.field == "key_id"
    after = scrape(server.metrics_port)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert after[("routerl_key_spend_usd_total", (("key", "tenant-a"),))] == pytest.approx(cost)
    assert delta("routerl_key_spend_usd_total", key="tenant-b") == pytest.approx(cost)
    assert delta("routerl_model_spend_usd_total", model=CHEAP) == pytest.approx(2 * cost)
    assert delta("routerl_model_calls_total", model=CHEAP, status="ok") == 2
    assert delta("routerl_completions_total", stop="refused") == 2
    assert delta("routerl_completions_total", stop="budget") == 1
    assert delta("routerl_requests_total", method="Complete", code="OK") == 2
    assert delta("routerl_requests_total", method="Complete", code="FAILED_PRECONDITION") == 3
    assert ("routerl_in_flight", (("lane", "complete"),)) in after


def test_cli_complete_against_the_server(server, replay, zeroeval_table, book, capsys):
    text, domain = text_of(zeroeval_table, zeroeval_table.prompt_index("crux/crux-test-#102"))
    common = ["--target", server.target, "--domain", domain, "--mode", "quality", "--models", ",".join(KNOWN)]
    assert main(["complete", text, *common, "--json", "--key-id", "cli-user"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model_id"] in KNOWN and result["answer"] == book.lookup(result["model_id"], text).text
    assert result["key_id"] == "cli-user" and result["attempts"][0]["status"] == "ok"

    replay.faults.always(result["model_id"], Fault(status=500))
    assert main(["complete", text, *common, "--stream"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() and f"round 1 {result['model_id']}: failed unavailable: HTTP 500" in out.err and "(fallback)" in out.err
    assert main(["complete", text, "--target", server.target, "--models", NO_ENDPOINT]) == 2
    assert "routerl: error: FAILED_PRECONDITION: no candidate has an endpoint" in capsys.readouterr().err
    assert main(["complete", text, "--target", server.target, "--router", "knn-probe"]) == 2
    assert "--router does not apply with --target" in capsys.readouterr().err


def test_cheapest_policy_and_keys_from_the_token_role(tmp_path, replay, offline, zeroeval_table, book, monkeypatch):
    """In-process: a server with a routing token, every key's budget 0 and the cheapest policy."""
    from routerl.server.app import RouterServer
    from routerl.server.config import ServerConfig
    from routerl.server.store import ModelStore

    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("ROUTERL_TEST_TOKEN", "tok-routing")
    cfg = ServerConfig(port=0, db=str(tmp_path / "r.db"), access_log="off", auth_token_env="ROUTERL_TEST_TOKEN",
                       key_budget_usd=0.0, key_budget_policy="cheapest", key_budget_min_score=0.7,
                       provider_timeout_s=2.0, provider_retries=1)  # fmt: skip
    srv = RouterServer(cfg, store=ModelStore(cfg.db, list(offline.values())))
    srv.start()
    text, domain = text_of(zeroeval_table, zeroeval_table.prompt_index("crux/crux-test-#102"))
    try:
        with RouterClient(f"127.0.0.1:{srv.port}", timeout=20, token="tok-routing") as client:
            result = client.complete(text, domain=domain, mode="quality")
            # the budget is spent: no router, the cheapest model with an overall score >= 0.7
            assert result.model_id == CHEAP and result.key_id == "routing" and result.stop == "accepted"
            assert "cheapest acceptable model" in result.think and result.attempts[0].think == result.think
            assert client.complete(text, key_id="tenant-x").key_id == "tenant-x"
        with RouterClient(f"127.0.0.1:{srv.port}", timeout=5) as anonymous, pytest.raises(RouterClientError) as err:
            anonymous.complete(text)
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        snap = srv.completer.ledger.snapshot()
        assert snap.by_key["routing"].calls == 1 and snap.by_key["tenant-x"].calls == 1
    finally:
        srv.stop(0).wait()
        srv.close()
