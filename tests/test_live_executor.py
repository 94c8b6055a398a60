"""The execution engine over real HTTP (replay endpoints on 127.0.0.1 answering from the shared
ZeroEval responses): escalation, fallback on 500/429/hangs, per-request and per-key budgets,
spend accounting (failed calls that were billed, spend that never goes down), a provider that
raises something else, budget skips beside failures, a model re-priced during its call, and
``routerl complete`` with a freshly probed unseen model."""

from __future__ import annotations

import json
import logging
import math
import threading
from typing import Sequence

import pytest

from routerl.cli import main
from routerl.descriptors import Endpoint, build_descriptor, load_catalog
from routerl.live.accounting import SpendLedger
from routerl.live.executor import Executor
from routerl.live.provider import RetryPolicy, call_cost_usd
from routerl.live.register import register_in_catalog
from routerl.live.replay import Fault
from routerl.live.scorers import score_exact
from routerl.routers.base import Attempt, Decision, Query, Router
from routerl.routers.descriptor_score import DescriptorScoreRouter
from tests.test_live_support import CHEAP, FLAKY, STRONG, UNSEEN, probe_slice, replay, replay_book  # noqa: F401

pytestmark = pytest.mark.shared_data


class CheckedEscalation(Router):
    """Calls ``first``; accepts an answer the checker approves, else escalates to ``then``."""

    name = "checked-escalation"
    max_rounds = 2

    def __init__(self, first: str, then: str, check):
        self.first, self.then, self.check = first, then, check

    def decide(self, query: Query, candidates: Sequence, knob: float, attempts: Sequence[Attempt] = ()) -> Decision:
        ids = [c.id for c in candidates]
        ranking = [(m, 1.0 / len(ids)) for m in ids]
        if not attempts:
            return Decision("route", self.first, ranking, think=f"start cheap with {self.first}")
        if self.check(attempts[-1].response):
            return Decision("accept", attempts[-1].model_id, think="the answer checks out")
        return Decision("route", self.then, ranking, think=f"{attempts[-1].model_id} looks wrong: escalate to {self.then}")


@pytest.fixture(scope="module")
def offline(zeroeval_table):
    """Offline descriptors (probe split) of the replayed models, without endpoints."""
    return {m: build_descriptor(zeroeval_table, m) for m in (UNSEEN, CHEAP, STRONG, FLAKY)}


def with_endpoints(server, descs):
    return [d.with_changes(endpoint=Endpoint(server.base_url, d.id, "")) for d in descs]


def executor(cands, router, **options) -> Executor:
    fast = {"timeout_s": 5.0, "retry": RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.2)}
    return Executor.from_descriptors(router, cands, provider_options=fast, **options)


def prompt(table, prompt_id):
    i = table.prompt_index(prompt_id)
    return Query(text=table.prompt_text[i], domain=table.domain[i]), table.gold[i]


def test_escalates_when_the_cheap_answer_fails_a_check(zeroeval_table, replay, offline):
    query, gold = prompt(zeroeval_table, "crux/crux-test-#131")  # recorded: 4o-mini wrong, sonnet right
    router = CheckedEscalation(CHEAP, STRONG, lambda text: score_exact(text, gold) == 1.0)
    cands = with_endpoints(replay, [offline[CHEAP], offline[STRONG]])
    result = executor(cands, router, max_rounds=3).complete(query, cands, 0.0)
    assert [(c.round, c.model_id, c.status) for c in result.calls] == [(1, CHEAP, "ok"), (2, STRONG, "ok")], result.calls
    assert result.stop == "accepted" and result.final_model == STRONG and not result.fallback
    assert score_exact(result.answer, gold) == 1.0
    assert result.think == [f"start cheap with {CHEAP}", f"{CHEAP} looks wrong: escalate to {STRONG}", "the answer checks out"]
    assert all(c.latency_ms > 0 and c.prompt_tokens > 0 and c.completion_tokens > 0 and c.cost_usd > 0 for c in result.calls)
    assert result.total_cost_usd == pytest.approx(sum(c.cost_usd for c in result.calls))
    # the round limit: with max_rounds=1 the cheap answer is final
    one = executor(cands, router, max_rounds=1).complete(query, cands, 0.0)
    assert one.stop == "max_rounds" and one.final_model == CHEAP and len(one.calls) == 1


@pytest.mark.parametrize(
    "fault, reason",
    [
        (Fault(status=500), "unavailable: HTTP 500 (2 tries)"),
        (Fault(status=429, headers={"Retry-After": "30"}), "unavailable: HTTP 429 (Retry-After 30 s exceeds the max delay 0.2 s)"),
        (Fault(delay_s=3.0), "timeout: no answer within 0.3 s"),
    ],
    ids=["500s", "429-retry-after", "hang"],
)
def test_falls_back_to_the_next_ranked_model(zeroeval_table, replay, offline, fault, reason):
    query, _ = prompt(zeroeval_table, "crux/crux-test-#102")
    cands = with_endpoints(replay, [offline[UNSEEN], offline[CHEAP], offline[FLAKY]])
    decision = DescriptorScoreRouter().decide(query, cands, 0.0)
    chosen, second = decision.model_id, decision.ranking[1][0]
    replay.faults.always(chosen, fault)
    ledger = SpendLedger()
    ex = Executor.from_descriptors(
        DescriptorScoreRouter(), cands, ledger=ledger,
        provider_options={"timeout_s": 0.3, "retry": RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.2)},
    )
    result = ex.complete(query, cands, 0.0, key="tenant-a")
    first, answered = result.calls
    assert (first.model_id, first.status, first.reason, first.fallback) == (chosen, "failed", reason, False)
    assert (answered.model_id, answered.status, answered.fallback) == (second, "ok", True)
    assert result.fallback and result.final_model == second and result.ok
    assert result.answer == replay.book.lookup(second, query.text).text
    snap = ledger.snapshot()
    assert snap.by_model[chosen].failures == 1 and snap.by_model[chosen].cost_usd == 0.0
    assert snap.by_model[second].calls == 1 and snap.by_key["tenant-a"].cost_usd == pytest.approx(answered.cost_usd)


def test_every_candidate_failing_is_reported(zeroeval_table, replay, offline):
    query, _ = prompt(zeroeval_table, "crux/crux-test-#102")
    cands = with_endpoints(replay, [offline[CHEAP], offline[STRONG]])
    for m in (CHEAP, STRONG):
        replay.faults.always(m, Fault(status=503))
    result = executor(cands, DescriptorScoreRouter()).complete(query, cands, 0.1)
    assert not result.ok and result.stop == "failed" and result.message == "every candidate failed"
    assert [c.status for c in result.calls] == ["failed", "failed"]


def test_a_model_without_endpoint_or_key_falls_back(zeroeval_table, replay, offline):
    query, _ = prompt(zeroeval_table, "crux/crux-test-#102")
    no_key = offline[STRONG].with_changes(endpoint=Endpoint(replay.base_url, STRONG, "ROUTERL_TEST_UNSET_KEY"))
    cands = [offline[CHEAP].with_changes(endpoint=None), no_key, offline[FLAKY].with_changes(endpoint=Endpoint(replay.base_url, FLAKY, ""))]
    router = CheckedEscalation(CHEAP, STRONG, lambda text: True)
    result = Executor.from_descriptors(router, cands).complete(query, cands, 0.0)
    assert [(c.model_id, c.status) for c in result.calls] == [(CHEAP, "failed"), (STRONG, "failed"), (FLAKY, "ok")]
    assert result.calls[0].reason == "no endpoint for this model"
    assert "ROUTERL_TEST_UNSET_KEY" in result.calls[1].reason and result.final_model == FLAKY


def test_request_budget_blocks_escalation_and_says_so(zeroeval_table, replay, offline):
    query, gold = prompt(zeroeval_table, "crux/crux-test-#131")
    cands = with_endpoints(replay, [offline[CHEAP], offline[STRONG]])
    cheap_est = offline[CHEAP].estimate_cost_usd(query.tokens)
    strong_est = offline[STRONG].estimate_cost_usd(query.tokens)
    budget = cheap_est * 2  # room for the cheap call, not for the strong one
    assert budget < strong_est
    router = CheckedEscalation(CHEAP, STRONG, lambda text: score_exact(text, gold) == 1.0)
    result = executor(cands, router, max_rounds=3, budget_usd=budget).complete(query, cands, 0.0)
    assert [(c.model_id, c.status) for c in result.calls] == [(CHEAP, "ok"), (STRONG, "skipped")]
    assert result.calls[1].reason.startswith(f"budget: estimated cost ${strong_est:.6f} exceeds the $")
    assert result.stop == "budget" and result.final_model == CHEAP and result.ok
    assert replay.model_hits[STRONG] == 0  # never started
    # a budget below every estimate: nothing is called
    none = executor(cands, router, budget_usd=cheap_est / 10).complete(query, cands, 0.0)
    assert not none.ok and none.stop == "budget" and {c.status for c in none.calls} == {"skipped"}


@pytest.mark.parametrize("policy", ["cheapest", "refuse"])
def test_exhausted_key_budget(zeroeval_table, replay, offline, policy):
    query, _ = prompt(zeroeval_table, "crux/crux-test-#102")
    cands = with_endpoints(replay, [offline[CHEAP], offline[STRONG], offline[UNSEEN]])
    ledger = SpendLedger(budgets={"tenant-a": 0.001})
    ex = executor(cands, CheckedEscalation(STRONG, STRONG, lambda t: True), ledger=ledger,
                  key_budget_policy=policy, min_acceptable_score=0.7)
    # the key's $0.001 left caps the request: sonnet (~$0.004) is skipped, the next in ranking fits
    first = ex.complete(query, cands, 0.0, key="tenant-a")
    assert first.calls[0].model_id == STRONG and first.calls[0].status == "skipped" and "budget" in first.calls[0].reason
    assert first.final_model == CHEAP and first.fallback
    ledger.set_budget("tenant-a", ledger.snapshot().by_key["tenant-a"].cost_usd)  # now exactly spent
    assert ledger.exhausted("tenant-a")
    result = ex.complete(query, cands, 0.0, key="tenant-a")
    if policy == "refuse":
        assert result.stop == "refused" and not result.ok and not result.calls
        assert "budget of key tenant-a" in result.message
    else:
        assert [c.model_id for c in result.calls] == [CHEAP]  # cheapest with overall score >= 0.7
        assert result.ok and "cheapest acceptable" in result.think[0]
    other = ex.complete(query, cands, 0.0, key="tenant-b")  # other keys are unaffected
    assert other.final_model == STRONG


def test_ledger_is_thread_safe_and_exports_prometheus_counters():
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    ledger = SpendLedger(default_budget_usd=1.0, prometheus_registry=registry)

    def spend():
        for _ in range(500):
            ledger.record_call("k", "m", cost_usd=0.001, prompt_tokens=2, completion_tokens=3)

    threads = [threading.Thread(target=spend) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = ledger.snapshot()
    assert snap.by_model["m"].calls == 2000 and snap.by_model["m"].prompt_tokens == 4000
    assert snap.by_key["k"].cost_usd == pytest.approx(2.0) and snap.by_key["k"].remaining_usd == 0.0
    assert ledger.exhausted("k") and not SpendLedger().exhausted("k")
    assert registry.get_sample_value("routerl_model_spend_usd_total", {"model": "m"}) == pytest.approx(2.0)
    assert registry.get_sample_value("routerl_model_calls_total", {"model": "m", "status": "ok"}) == 2000
    assert registry.get_sample_value("routerl_key_spend_usd_total", {"key": "k"}) == pytest.approx(2.0)
    assert json.dumps(snap.to_dict())
    with pytest.raises(ValueError, match="budgets.k"):
        SpendLedger(budgets={"k": -1})


def test_validation_names_fields():
    with pytest.raises(ValueError, match="max_rounds"):
        Executor(DescriptorScoreRouter(), {}, max_rounds=0)
    with pytest.raises(ValueError, match="key_budget_policy"):
        Executor(DescriptorScoreRouter(), {}, key_budget_policy="free")
    with pytest.raises(ValueError, match="budget_usd"):
        Executor(DescriptorScoreRouter(), {}, budget_usd=float("nan"))
    with pytest.raises(ValueError, match="candidates"):
        Executor(DescriptorScoreRouter(), {}).complete("q", [], 0.0)


def test_complete_cli_uses_a_freshly_probed_unseen_model(zeroeval_table, replay, offline, tmp_path, capsys, monkeypatch):
    """Probe the unseen model live, add two known models, then `routerl complete` routes to it."""
    monkeypatch.setenv("REPLAY_KEY", "k")
    rows = probe_slice(zeroeval_table)
    probes = tmp_path / "probes.jsonl"
    probes.write_text("".join(json.dumps({
        "prompt_id": zeroeval_table.prompt_ids[i], "task": zeroeval_table.task[i], "domain": zeroeval_table.domain[i],
        "prompt": zeroeval_table.prompt_text[i], "gold_answer": zeroeval_table.gold[i]}) + "\n" for i in rows))
    catalog = tmp_path / "live.yaml"
    assert main(["probe", "--endpoint", replay.base_url, "--model-name", UNSEEN, "--api-key-env", "REPLAY_KEY", "--id", UNSEEN,
                 "--input-price", "1", "--output-price", "5", "--probes", str(probes), "--catalog", str(catalog), "--no-progress"]) == 0
    for m in (CHEAP, FLAKY):
        register_in_catalog(offline[m].with_changes(endpoint=Endpoint(replay.base_url, m, "")), catalog)
    models = load_catalog(catalog)
    i = next(i for i in zeroeval_table.prompts_in("test") if zeroeval_table.task[i] == "gsm")
    text, domain = zeroeval_table.prompt_text[i], zeroeval_table.domain[i]
    expected = DescriptorScoreRouter().decide(Query(text=text, domain=domain), models, 0.0).model_id
    assert expected == UNSEEN  # its 10 probed gsm answers beat the others' gsm scores
    capsys.readouterr()
    assert main(["complete", text, "--catalog", str(catalog), "--domain", domain, "--mode", "quality", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["final_model"] == UNSEEN and result["stop"] == "accepted" and result["ok"]
    assert result["answer"] == replay.book.lookup(UNSEEN, text).text
    assert result["calls"][0]["cost_usd"] > 0
    # the text report names the calls and the total; a failing first choice shows its fallback
    replay.faults.always(UNSEEN, Fault(status=500))
    assert main(["complete", text, "--catalog", str(catalog), "--domain", domain, "--mode", "quality", "--retries", "1"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() and f"round 1 {UNSEEN}: failed unavailable: HTTP 500" in out.err and "(fallback)" in out.err


def test_provider_pool_serves_models_registered_later(zeroeval_table, replay, offline):
    """The server case: the executor exists before the model; the pool builds its provider on
    first use, keeps it, and replaces it when the descriptor changes."""
    query, _ = prompt(zeroeval_table, "crux/crux-test-#102")
    ex = Executor.from_descriptors(DescriptorScoreRouter())  # no models yet
    (late,) = with_endpoints(replay, [offline[CHEAP]])
    assert ex.complete(query, [late], 0.1).final_model == CHEAP
    pool = ex.providers
    assert pool.get(late) is pool.get(late)
    repriced = late.with_changes(input_price_per_mtok=0.3)
    assert pool.get(repriced) is not pool.get(late) and pool.get(repriced).input_price_per_mtok == 0.3
    assert pool.get(late.with_changes(endpoint=None)) is None
    pool.close()


def test_per_request_limits_listener_and_cancel(zeroeval_table, replay, offline):
    """What a server passes per request: lower rounds/budget/timeout, a listener, a cancel check."""
    query, gold = prompt(zeroeval_table, "crux/crux-test-#131")
    cands = with_endpoints(replay, [offline[CHEAP], offline[STRONG]])
    router = CheckedEscalation(CHEAP, STRONG, lambda text: score_exact(text, gold) == 1.0)
    ex = executor(cands, router, max_rounds=3)
    seen = []
    one = ex.complete(query, cands, 0.0, max_rounds=1, on_call=seen.append)
    assert one.stop == "max_rounds" and [c.model_id for c in one.calls] == [CHEAP]
    assert seen == one.calls and seen[0].think == f"start cheap with {CHEAP}"
    assert ex.complete(query, cands, 0.0, max_rounds=10).rounds == 2  # never above the executor's 3, and it accepted
    cheap_est = offline[CHEAP].estimate_cost_usd(query.tokens)
    capped = ex.complete(query, cands, 0.0, budget_usd=cheap_est * 2)
    assert capped.stop == "budget" and [c.status for c in capped.calls] == ["ok", "skipped"]
    gone = ex.complete(query, cands, 0.0, cancelled=lambda: True)
    assert gone.stop == "cancelled" and not gone.calls and not gone.ok
    late = ex.complete(query, cands, 0.0, timeout_s=0.0)
    assert late.stop == "deadline" and not late.calls
    with pytest.raises(ValueError, match="max_rounds"):
        ex.complete(query, cands, 0.0, max_rounds=0)


def test_pool_turns_a_malformed_endpoint_into_a_failing_provider():
    """A registry may hold any endpoint text: the executor must fall back, not crash."""
    from routerl.descriptors import ModelDescriptor
    from routerl.live.errors import ProviderError
    from routerl.live.pool import ProviderPool

    provider = ProviderPool().get(ModelDescriptor("bad", 1.0, 1.0, endpoint=Endpoint("ftp://nowhere", "m", "")))
    with pytest.raises(ProviderError, match="unusable endpoint: field 'endpoint.base_url'"):
        provider.complete("hi")


# -- spend that never goes down, billed failures, broken providers, budget vs failure, leases -----

def no_content(prompt_tokens, completion_tokens) -> Fault:
    """A 200 answer without content (a tool call) whose usage the provider bills."""
    message = {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    return Fault(body=json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                  "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                                  "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}}).encode())


def test_ledger_spend_never_goes_down(caplog):
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    ledger = SpendLedger(budgets={"k": 1.0}, prometheus_registry=registry)
    ledger.record_call("k", "m", cost_usd=0.25, prompt_tokens=10, completion_tokens=5)
    with caplog.at_level(logging.ERROR, logger="routerl.live.accounting"):
        for bogus in (-0.1, float("nan"), float("inf"), float("-inf"), "0.5", None, True):
            ledger.record_call("k", "m", cost_usd=bogus, prompt_tokens=-3, completion_tokens=-4, ok=False)
    snap = ledger.snapshot()
    m = snap.by_model["m"]
    assert (m.calls, m.failures, m.prompt_tokens, m.completion_tokens) == (8, 7, 10, 5)
    assert m.cost_usd == 0.25 and snap.by_key["k"].cost_usd == 0.25 and snap.total_cost_usd == 0.25
    assert ledger.remaining_usd("k") == 0.75 and not ledger.exhausted("k")
    assert registry.get_sample_value("routerl_key_spend_usd_total", {"key": "k"}) == 0.25
    assert registry.get_sample_value("routerl_model_tokens_total", {"model": "m", "kind": "prompt"}) == 10
    assert "field 'cost_usd' of a call is -0.1; counted as 0" in caplog.text
    assert "field 'prompt_tokens' of a call is -3" in caplog.text


def test_a_provider_raising_something_else_is_a_failed_call(zeroeval_table, replay, offline, caplog):
    class Broken:
        timeout_s = 1.0

        def complete(self, messages, *, timeout_s=None):
            raise RuntimeError("boom\nin two lines")

    query, _ = prompt(zeroeval_table, "crux/crux-test-#102")
    cheap, strong = offline[CHEAP], with_endpoints(replay, [offline[STRONG]])[0]
    from routerl.live.provider import ChatProvider

    ledger = SpendLedger()
    ex = Executor(CheckedEscalation(CHEAP, STRONG, lambda t: True), {CHEAP: Broken(), STRONG: ChatProvider.from_descriptor(strong)},
                  ledger=ledger)
    with caplog.at_level(logging.ERROR, logger="routerl.live.executor"):
        result = ex.complete(query, [cheap, strong], 0.0, key="t")
    assert [(c.model_id, c.status, c.fallback) for c in result.calls] == [(CHEAP, "failed", False), (STRONG, "ok", True)]
    assert result.calls[0].reason == "error: RuntimeError: boom in two lines" and result.calls[0].cost_usd == 0.0
    assert result.ok and result.final_model == STRONG and result.fallback
    assert ledger.snapshot().by_model[CHEAP].failures == 1
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)  # logged with its traceback
    alone = Executor(CheckedEscalation(CHEAP, CHEAP, lambda t: True), {CHEAP: Broken()}).complete(query, [cheap], 0.0)
    assert not alone.ok and alone.stop == "failed" and alone.message == "every candidate failed"


def test_a_failed_call_costs_what_its_provider_billed(zeroeval_table, replay, offline):
    query, _ = prompt(zeroeval_table, "crux/crux-test-#102")
    cands = with_endpoints(replay, [offline[UNSEEN], offline[CHEAP], offline[FLAKY]])
    decision = DescriptorScoreRouter().decide(query, cands, 0.0)
    chosen, second = decision.model_id, decision.ranking[1][0]
    replay.faults.always(chosen, no_content(1000, 500))
    billed = call_cost_usd(1000, 500, offline[chosen].input_price_per_mtok, offline[chosen].output_price_per_mtok)
    ledger = SpendLedger()
    result = executor(cands, DescriptorScoreRouter(), ledger=ledger).complete(query, cands, 0.0, key="tenant-a")
    first, answered = result.calls
    assert (first.model_id, first.status) == (chosen, "failed") and "(billed 1000+500 tokens)" in first.reason
    assert (first.prompt_tokens, first.completion_tokens) == (1000, 500) and first.cost_usd == pytest.approx(billed)
    assert (answered.model_id, answered.status) == (second, "ok") and result.final_model == second
    assert result.total_cost_usd == pytest.approx(billed + answered.cost_usd)
    snap = ledger.snapshot()
    assert snap.by_model[chosen].failures == 1 and snap.by_model[chosen].cost_usd == pytest.approx(billed)
    assert snap.by_model[chosen].prompt_tokens == 1000
    assert snap.by_key["tenant-a"].cost_usd == pytest.approx(billed + answered.cost_usd)


def test_a_billed_failure_uses_up_the_request_budget(zeroeval_table, replay, offline):
    query, _ = prompt(zeroeval_table, "crux/crux-test-#102")
    cands = with_endpoints(replay, [offline[CHEAP], offline[STRONG]])
    budget = offline[STRONG].estimate_cost_usd(query.tokens) * 1.5  # room for either call alone
    billed_tokens = math.ceil(budget * 1e6 / offline[CHEAP].input_price_per_mtok) + 1  # the failed call bills all of it
    replay.faults.always(CHEAP, no_content(billed_tokens, 0))
    result = executor(cands, CheckedEscalation(CHEAP, STRONG, lambda t: True), budget_usd=budget).complete(query, cands, 0.0)
    assert [(c.model_id, c.status) for c in result.calls] == [(CHEAP, "failed"), (STRONG, "skipped")]
    assert result.calls[0].cost_usd > budget and "exceeds the $0.000000 left" in result.calls[1].reason
    assert replay.model_hits[STRONG] == 0
    assert result.stop == "failed" and result.message.startswith("every model within the budget failed; the other 1 exceed the budget")


def test_budget_skips_and_failures_in_one_round_stop_as_failed(zeroeval_table, replay, offline):
    query, _ = prompt(zeroeval_table, "crux/crux-test-#102")
    cands = with_endpoints(replay, [offline[CHEAP], offline[STRONG]])
    cheap_est, strong_est = (offline[m].estimate_cost_usd(query.tokens) for m in (CHEAP, STRONG))
    budget = cheap_est * 2
    assert budget < strong_est
    replay.faults.always(CHEAP, Fault(status=503))
    result = executor(cands, CheckedEscalation(CHEAP, STRONG, lambda t: True), budget_usd=budget).complete(query, cands, 0.0)
    assert [(c.model_id, c.status) for c in result.calls] == [(CHEAP, "failed"), (STRONG, "skipped")]
    assert not result.ok and result.stop == "failed"
    assert result.message == f"every model within the budget failed; the other 1 exceed the budget (${budget:g} for this request, $0.000000 spent)"
    # with an earlier answer: round 2's pick fails, the rest is over budget; the answer stands
    cands = with_endpoints(replay, [offline[CHEAP], offline[FLAKY], offline[STRONG]])
    recorded = replay.book.lookup(CHEAP, query.text)
    cheap_cost = call_cost_usd(recorded.prompt_tokens, recorded.completion_tokens, offline[CHEAP].input_price_per_mtok,
                               offline[CHEAP].output_price_per_mtok)
    budget = cheap_cost + offline[FLAKY].estimate_cost_usd(query.tokens) * 2
    assert budget - cheap_cost < strong_est
    replay.faults.clear()
    replay.faults.always(FLAKY, Fault(status=503))
    router = CheckedEscalation(CHEAP, FLAKY, lambda t: False)
    result = executor(cands, router, max_rounds=3, budget_usd=budget).complete(query, cands, 0.0)
    assert [(c.round, c.model_id, c.status) for c in result.calls] == [(1, CHEAP, "ok"), (2, FLAKY, "failed"), (2, STRONG, "skipped")]
    assert result.stop == "failed" and result.ok and result.final_model == CHEAP
    assert "the other 1 exceed the budget" in result.message and result.message.endswith(f"the answer of {CHEAP} stands")


def test_the_budget_alone_still_stops_as_budget(zeroeval_table, replay, offline):
    query, _ = prompt(zeroeval_table, "crux/crux-test-#102")
    cands = with_endpoints(replay, [offline[CHEAP], offline[STRONG]])
    budget = offline[CHEAP].estimate_cost_usd(query.tokens) / 10
    result = executor(cands, CheckedEscalation(CHEAP, STRONG, lambda t: True), budget_usd=budget).complete(query, cands, 0.0)
    assert result.stop == "budget" and [c.status for c in result.calls] == ["skipped", "skipped"] and replay.requests == 0


def test_a_model_repriced_while_its_call_is_in_flight(zeroeval_table, replay, offline):
    """The executor leases its provider from the pool: a re-priced descriptor retires the old
    provider, which finishes the call in flight and closes afterwards."""
    query, _ = prompt(zeroeval_table, "crux/crux-test-#102")
    (desc,) = with_endpoints(replay, [offline[CHEAP]])
    repriced = desc.with_changes(input_price_per_mtok=desc.input_price_per_mtok * 2)
    ex = executor([desc], CheckedEscalation(CHEAP, CHEAP, lambda t: True))
    old = ex.providers.get(desc)
    seen = []

    def reprice_in_flight(hit):
        if hit == 1:
            seen.append(ex.providers.get(repriced))  # the registry re-prices the model meanwhile
        return None

    replay.faults.plan[CHEAP] = reprice_in_flight
    result = ex.complete(query, [desc], 0.0)
    assert [(c.model_id, c.status) for c in result.calls] == [(CHEAP, "ok")], result.calls
    recorded = replay.book.lookup(CHEAP, query.text)
    assert result.calls[0].cost_usd == pytest.approx(call_cost_usd(recorded.prompt_tokens, recorded.completion_tokens,
                                                                   desc.input_price_per_mtok, desc.output_price_per_mtok))
    (new,) = seen
    assert new is not old and old._client.is_closed() and not new._client.is_closed()
    # a lease taken before the re-pricing keeps the old provider usable until it ends
    with ex.lease(repriced) as leased:
        assert leased is new
        ex.providers.get(desc)  # priced back
        assert not leased._client.is_closed()
        assert leased.complete(query.text).text == recorded.text
    assert new._client.is_closed()
    again = ex.complete(query, [desc], 0.0)
    assert again.ok and ex.providers.get(desc) is not old
    ex.providers.close()
