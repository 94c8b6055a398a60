"""ChatProvider over real HTTP on loopback: usage and cost, retries with backoff and Retry-After,
timeouts, typed errors, and keys that never reach logs or messages."""

from __future__ import annotations

import logging
import time

import pytest

from routerl.descriptors.model import Endpoint, ModelDescriptor
from routerl.live.errors import ProviderError, ProviderTimeout, ProviderUnavailable
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
