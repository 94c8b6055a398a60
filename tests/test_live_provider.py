"""ChatProvider over real HTTP on loopback: usage and cost, retries with backoff and Retry-After,
timeouts, typed errors, and keys that never reach logs or messages; odd bodies (slow, stalled,
malformed, cut short, billed without content), the call deadline, and a retired provider's
lifetime (hold/release/close_when_idle, a pool's lease)."""

from __future__ import annotations

import json
import logging
import re
import threading
import time

import pytest

from routerl.descriptors.model import Endpoint, ModelDescriptor
from routerl.live.errors import ProviderError, ProviderTimeout, ProviderUnavailable
from routerl.live.pool import ProviderPool
from routerl.live.provider import ChatProvider, RetryPolicy, call_cost_usd, parse_retry_after
from routerl.live.replay import Fault, Recorded, ReplayBook, ReplayServer
from tests.test_live_support import ScriptedFaults

MODEL = "toy-model"
KEY = "sk-test-SECRET-0123456789abcdef"
PROMPT = "What is 2 + 2?"


@pytest.fixture()
def server():
    book = ReplayBook({MODEL: {PROMPT: Recorded("toy/1", '{"answer": "4"}', 12, 30), "no usage": Recorded("toy/2", "ok", None, None)}})
    faults = ScriptedFaults()
    srv = ReplayServer(book, fault=faults, api_key=KEY).start()
    srv.faults = faults
    yield srv
    srv.stop()


class Sleeps(list):
    """A recording sleep: tests check the backoff without waiting for it."""

    def __call__(self, seconds):
        self.append(seconds)


def provider(server, *, env_name="TOY_KEY", attempts=3, timeout_s=5.0, sleep=None, **kw) -> ChatProvider:
    return ChatProvider(
        Endpoint(server.base_url, MODEL, env_name),
        input_price_per_mtok=1.0, output_price_per_mtok=4.0, model_id="toy", timeout_s=timeout_s,
        retry=RetryPolicy(attempts=attempts, base_delay_s=0.01, max_delay_s=0.5, **kw),
        env={env_name: KEY}, sleep=sleep if sleep is not None else Sleeps(),
    )


def test_answer_usage_and_cost(server):
    answer = provider(server).complete(PROMPT)
    assert answer.text == '{"answer": "4"}'
    assert (answer.prompt_tokens, answer.completion_tokens) == (12, 30)
    assert answer.cost_usd == pytest.approx((12 * 1.0 + 30 * 4.0) / 1e6)
    assert answer.cost_usd == call_cost_usd(12, 30, 1.0, 4.0)
    assert answer.latency_ms > 0 and answer.tries == 1 and not answer.usage_estimated


def test_missing_usage_is_estimated_and_flagged(server):
    answer = provider(server).complete("no usage")
    assert answer.usage_estimated and answer.prompt_tokens >= 1 and answer.completion_tokens >= 1


def test_retries_5xx_with_exponential_backoff(server):
    server.faults.first(MODEL, 2, Fault(status=503))
    sleeps = Sleeps()
    answer = provider(server, sleep=sleeps).complete(PROMPT)
    assert answer.tries == 3 and sleeps == [0.01, 0.02]
    assert server.model_hits[MODEL] == 3


def test_429_honours_retry_after(server):
    server.faults.first(MODEL, 1, Fault(status=429, headers={"Retry-After": "0.3"}))
    sleeps = Sleeps()
    assert provider(server, sleep=sleeps).complete(PROMPT).tries == 2
    assert sleeps == [0.3]  # the server asked for longer than the 0.01 s backoff


def test_retry_after_beyond_max_delay_gives_up_at_once(server):
    server.faults.always(MODEL, Fault(status=429, headers={"Retry-After": "120"}))
    with pytest.raises(ProviderUnavailable, match="Retry-After 120 s exceeds the max delay") as err:
        provider(server).complete(PROMPT)
    assert err.value.status == 429 and server.model_hits[MODEL] == 1


def test_5xx_after_every_retry_is_unavailable(server):
    server.faults.always(MODEL, Fault(status=500))
    with pytest.raises(ProviderUnavailable, match=r"HTTP 500 \(3 tries\)"):
        provider(server).complete(PROMPT)
    assert server.model_hits[MODEL] == 3


def test_hang_past_timeout_is_a_timeout_not_retried(server):
    server.faults.always(MODEL, Fault(delay_s=3.0))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="no answer within 0.3 s"):
        provider(server, timeout_s=0.3).complete(PROMPT)
    assert time.monotonic() - started < 2.0
    assert server.model_hits[MODEL] == 1


def test_timeouts_retried_when_asked(server):
    server.faults.first(MODEL, 1, Fault(delay_s=3.0))
    assert provider(server, timeout_s=0.3, retry_timeouts=True).complete(PROMPT).tries == 2


def test_4xx_is_not_retried_and_names_the_status(server):
    p = ChatProvider(Endpoint(server.base_url, "no-such-model", "TOY_KEY"), input_price_per_mtok=1, output_price_per_mtok=1,
                     env={"TOY_KEY": KEY}, retry=RetryPolicy(attempts=3, base_delay_s=0.01))
    with pytest.raises(ProviderError, match="HTTP 404") as err:
        p.complete(PROMPT)
    assert type(err.value) is ProviderError and err.value.status == 404


def test_unreachable_endpoint_is_unavailable():
    import socket

    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = ChatProvider(Endpoint(f"http://127.0.0.1:{port}/v1", MODEL, ""), input_price_per_mtok=1, output_price_per_mtok=1,
                     retry=RetryPolicy(attempts=2, base_delay_s=0.01), sleep=Sleeps())
    with pytest.raises(ProviderUnavailable, match="connection failed"):
        p.complete(PROMPT)


def test_missing_key_variable_names_the_variable_not_a_value():
    with pytest.raises(ProviderError, match="environment variable TOY_KEY .*api_key_env.* is not set"):
        ChatProvider(Endpoint("http://127.0.0.1:9/v1", MODEL, "TOY_KEY"), input_price_per_mtok=1, output_price_per_mtok=1, env={})


def test_key_never_logged_nor_in_errors(server, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, the openai and httpx clients' included
    for name in ("openai", "httpx", "httpx2", "httpcore", "routerl"):
        caplog.set_level(logging.DEBUG, logger=name)
    server.faults.first(MODEL, 1, Fault(status=500))
    p = provider(server)
    p.complete(PROMPT)
    wrong = ChatProvider(Endpoint(server.base_url, MODEL, "OTHER"), input_price_per_mtok=1, output_price_per_mtok=1,
                         env={"OTHER": KEY + "-wrong"})
    with pytest.raises(ProviderError, match="HTTP 401: authentication failed") as err:
        wrong.complete(PROMPT)
    assert any(r.name.startswith("openai") for r in caplog.records), "expected the openai client's DEBUG logs"
    assert KEY not in caplog.text
    assert KEY not in str(err.value) and KEY not in repr(p) and KEY not in repr(wrong)


def test_validation_names_fields():
    with pytest.raises(ValueError, match="endpoint.base_url"):
        ChatProvider(Endpoint("ftp://x", MODEL, ""), input_price_per_mtok=1, output_price_per_mtok=1)
    with pytest.raises(ValueError, match="endpoint.model_name"):
        ChatProvider(Endpoint("http://127.0.0.1:9/v1", "", ""), input_price_per_mtok=1, output_price_per_mtok=1)
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="'endpoint' is not set"):
        ChatProvider.from_descriptor(ModelDescriptor("m", 1.0, 1.0))


def test_from_descriptor_uses_prices_and_id(server):
    desc = ModelDescriptor("toy-id", 2.0, 8.0, endpoint=Endpoint(server.base_url, MODEL, "TOY_KEY"))
    p = ChatProvider.from_descriptor(desc, env={"TOY_KEY": KEY})
    answer = p.complete(PROMPT)
    assert p.model_id == "toy-id" and answer.cost_usd == pytest.approx((12 * 2 + 30 * 8) / 1e6)


def test_parse_retry_after():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)


# -- body-level faults, billed failures, the call deadline, lifetime ------------------------------

def body(content="4", usage=None, **message) -> bytes:
    """A chat-completions body of our own (``content`` None = an answer without content)."""
    payload = {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL,
               "choices": [{"index": 0, "message": {"role": "assistant", "content": content, **message}, "finish_reason": "stop"}]}
    if usage is not None:
        payload["usage"] = usage
    return json.dumps(payload).encode("utf-8")


def test_answer_without_content_but_with_usage_is_an_error_carrying_its_billed_cost(server):
    tool_call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    server.faults.always(MODEL, Fault(body=body(None, {"prompt_tokens": 100, "completion_tokens": 50}, tool_calls=tool_call)))
    with pytest.raises(ProviderError, match=r"no choices\[0\]\.message\.content \(billed 100\+50 tokens\)") as err:
        provider(server).complete(PROMPT)
    assert type(err.value) is ProviderError and server.model_hits[MODEL] == 1  # not retried
    assert (err.value.prompt_tokens, err.value.completion_tokens) == (100, 50)
    assert err.value.cost_usd == pytest.approx(call_cost_usd(100, 50, 1.0, 4.0))
    # without usage nothing was billed: the error carries zeros
    server.faults.always(MODEL, Fault(body=body(None)))
    with pytest.raises(ProviderError, match="no choices") as err:
        provider(server).complete(PROMPT)
    assert (err.value.prompt_tokens, err.value.completion_tokens, err.value.cost_usd) == (0, 0, 0.0)


@pytest.mark.parametrize("usage", [{"prompt_tokens": -5, "completion_tokens": 7}, {"prompt_tokens": 12, "completion_tokens": True},
                                   {"prompt_tokens": 1.5, "completion_tokens": 3}], ids=["negative", "bool", "float"])
def test_usage_that_is_not_a_count_is_estimated(server, usage):
    server.faults.always(MODEL, Fault(body=body("four", usage)))
    answer = provider(server).complete(PROMPT)
    assert answer.text == "four" and answer.usage_estimated
    assert answer.prompt_tokens >= 1 and answer.completion_tokens == 1 and answer.cost_usd > 0


def test_a_body_dripping_past_the_timeout_is_a_timeout(server):
    # the whole body takes ~20 x 0.05 s = 1 s; no single read waits longer than 0.05 s
    server.faults.always(MODEL, Fault(body=body("x" * 100, {"prompt_tokens": 1, "completion_tokens": 1}), drip_s=0.05, drip_bytes=10))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match=r"no answer within 0.3 s \(the body was still arriving\)"):
        provider(server, timeout_s=0.3).complete(PROMPT)
    assert time.monotonic() - started < 2.0 and server.model_hits[MODEL] == 1


def test_a_body_that_stops_arriving_is_a_timeout(server):
    # the headers come at once, the body's first piece only after 3 s
    server.faults.always(MODEL, Fault(body=body("late"), drip_s=3.0))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match=r"no answer within 0.3 s \(the body stopped arriving\)"):
        provider(server, timeout_s=0.3).complete(PROMPT)
    assert time.monotonic() - started < 2.0 and server.model_hits[MODEL] == 1


def test_a_slow_body_within_the_timeout_is_an_answer(server):
    server.faults.always(MODEL, Fault(body=body("slow but fine", {"prompt_tokens": 3, "completion_tokens": 4}), drip_s=0.01, drip_bytes=64))
    answer = provider(server, timeout_s=5.0).complete(PROMPT)
    assert answer.text == "slow but fine" and (answer.prompt_tokens, answer.completion_tokens) == (3, 4)


@pytest.mark.parametrize("raw, what", [(b"<html>502 Bad Gateway</html>", "JSONDecodeError"), (b'{"choices": "\xff\xfe"}', "UnicodeDecodeError")],
                         ids=["not-json", "not-utf8"])
def test_a_malformed_body_is_a_provider_error_not_retried(server, raw, what):
    server.faults.always(MODEL, Fault(body=raw))
    with pytest.raises(ProviderError, match=rf"malformed response \({what}") as err:
        provider(server).complete(PROMPT)
    assert type(err.value) is ProviderError and server.model_hits[MODEL] == 1


def test_a_body_cut_short_is_unavailable_and_retried(server):
    server.faults.first(MODEL, 1, Fault(body=body("cut", {"prompt_tokens": 1, "completion_tokens": 1}), cut_after=20))
    sleeps = Sleeps()
    assert provider(server, sleep=sleeps).complete(PROMPT).tries == 2 and sleeps == [0.01]
    server.faults.always(MODEL, Fault(body=body("cut"), cut_after=20))
    with pytest.raises(ProviderUnavailable, match=r"connection failed \(.*\) \(2 tries\)"):
        provider(server, attempts=2).complete(PROMPT)


def test_any_other_client_failure_is_a_provider_error(server, monkeypatch):
    p = provider(server)

    def broken(**kwargs):
        raise RuntimeError("the client broke")

    monkeypatch.setattr(p._client.chat.completions.with_streaming_response, "create", broken)
    with pytest.raises(ProviderError, match=r"client error \(RuntimeError: the client broke\)") as err:
        p.complete(PROMPT)
    assert type(err.value) is ProviderError


def test_the_call_timeout_is_a_deadline_for_retries_and_waits(server):
    # a retry whose wait (Retry-After 0.4 s) would end past the 0.3 s deadline is not started
    server.faults.always(MODEL, Fault(status=503, headers={"Retry-After": "0.4"}))
    sleeps = Sleeps()
    with pytest.raises(ProviderUnavailable, match=r"HTTP 503 \(no time for a retry before the 0.3 s deadline\)") as err:
        provider(server, sleep=sleeps).complete(PROMPT, timeout_s=0.3)
    assert sleeps == [] and server.model_hits[MODEL] == 1
    assert err.value.status == 503 and err.value.retry_after_s == pytest.approx(0.4)  # kept through the new reason


def test_each_try_gets_what_is_left_of_the_call_deadline(server):
    # try 1: a fast 503; try 2 hangs: it gets the 0.5 s deadline's rest, not the provider's 5 s
    server.faults.plan[MODEL] = lambda hit: Fault(status=503) if hit == 1 else Fault(delay_s=3.0)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match=r"\(2 tries\)") as err:
        provider(server, timeout_s=5.0).complete(PROMPT, timeout_s=0.5)
    assert time.monotonic() - started < 2.0
    given = float(re.search(r"no answer within ([0-9.]+) s", err.value.reason).group(1))
    assert 0 < given < 0.5


def test_retried_timeouts_stay_within_the_call_deadline(server):
    server.faults.always(MODEL, Fault(delay_s=3.0))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="no time for a retry before the 0.6 s deadline"):
        provider(server, timeout_s=0.25, attempts=10, retry_timeouts=True).complete(PROMPT, timeout_s=0.6)
    assert time.monotonic() - started < 2.0  # 10 tries of 0.25 s would take 2.5 s
    assert 2 <= server.model_hits[MODEL] <= 1 + 4


def test_retry_after_and_status_survive_the_tries_note(server):
    server.faults.always(MODEL, Fault(status=429, headers={"Retry-After": "0.05"}))
    with pytest.raises(ProviderUnavailable, match=r"HTTP 429 \(2 tries\)") as err:
        provider(server, attempts=2).complete(PROMPT)
    assert err.value.status == 429 and err.value.retry_after_s == pytest.approx(0.05)


def test_a_retired_provider_closes_when_its_last_user_ends(server):
    p = provider(server)
    p.hold()
    p.close_when_idle()
    assert not p._client.is_closed()  # a call still uses it
    assert p.complete(PROMPT).text == '{"answer": "4"}'
    p.release()
    assert p._client.is_closed()
    idle = provider(server)
    idle.close_when_idle()
    assert idle._client.is_closed()  # nobody used it: closed at once


def test_a_retired_provider_finishes_its_call_in_flight(server):
    p = provider(server)
    in_flight = threading.Event()

    def slow(hit):
        in_flight.set()
        return Fault(delay_s=0.3)

    server.faults.plan[MODEL] = slow
    out = {}
    caller = threading.Thread(target=lambda: out.setdefault("answer", p.complete(PROMPT)))
    caller.start()
    assert in_flight.wait(5)
    p.close_when_idle()  # re-priced meanwhile: retired, not closed under the call
    caller.join(5)
    assert out["answer"].text == '{"answer": "4"}'
    assert p._client.is_closed()


def test_pool_lease_keeps_a_replaced_provider_open_until_the_lease_ends(server):
    pool = ProviderPool(timeout_s=5.0, retry=RetryPolicy(attempts=1), env={"TOY_KEY": KEY})
    desc = ModelDescriptor("toy", 1.0, 4.0, endpoint=Endpoint(server.base_url, MODEL, "TOY_KEY"))
    with pool.lease(desc) as leased:
        fresh = pool.get(desc.with_changes(input_price_per_mtok=2.0))  # re-priced between look-up and call
        assert fresh is not leased and not leased._client.is_closed()
        answer = leased.complete(PROMPT)  # the old price still applies to the call it was leased for
        assert answer.cost_usd == pytest.approx(call_cost_usd(12, 30, 1.0, 4.0))
    assert leased._client.is_closed() and not fresh._client.is_closed()
    assert fresh.complete(PROMPT).cost_usd == pytest.approx(call_cost_usd(12, 30, 2.0, 4.0))
    with pool.lease(desc.with_changes(endpoint=None)) as none:
        assert none is None
    pool.close()
