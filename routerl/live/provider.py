"""One model behind an OpenAI-compatible chat-completions endpoint.

    provider = ChatProvider.from_descriptor(desc, timeout_s=30, retry=RetryPolicy(attempts=3))
    answer = provider.complete([{"role": "user", "content": "2+2?"}])
    answer.text, answer.prompt_tokens, answer.completion_tokens, answer.cost_usd, answer.latency_ms

The endpoint (``routerl.descriptors.Endpoint``) names the base URL, the provider's model name and
the *name* of the environment variable holding the key; the key is read from the environment
when the provider is built, handed to the ``openai`` client and never stored elsewhere, logged or
put in an error message.

Retries: 429, 5xx and connection errors are retried up to ``RetryPolicy.attempts`` tries in all,
waiting ``base_delay_s * 2**n`` (capped at ``max_delay_s``) or the server's ``Retry-After`` when
it asks for longer; a ``Retry-After`` beyond ``max_delay_s`` ends the retries at once (waiting
less would ignore the server). Timeouts are not retried unless ``retry_timeouts`` is set: a
hung provider should not eat a request's time budget several times over; the executor falls back
to another model instead.

Time: ``timeout_s`` (the provider's) limits each try, from sending the request to the last byte
of the answer: the body is read in chunks and a try still reading when its time is up ends as a
``ProviderTimeout`` (a provider that drips its answer cannot hold a call past it; one read may
overrun by at most the time left when the try started). ``complete(timeout_s=...)`` is a deadline
for the whole call, retries and waits included: each try gets the lower of the two, and no retry
(nor its wait) is started that would end past the deadline.

Cost = prompt tokens x input price + completion tokens x output price (per million tokens), from
the usage the provider reports; usage that is missing or not a count (negative, not an integer)
is estimated from the text instead (4 characters per token; ``usage_estimated``). An answer
without content whose usage was reported is a ``ProviderError`` that carries that cost (it was
billed).

A malformed body (not JSON, not UTF-8) is a ``ProviderError`` ("malformed response"), as is any
other failure inside the HTTP client, so the caller falls back instead of failing.

A provider replaced while calls are using it (e.g. a re-priced model in a ``ProviderPool``) is
retired with ``close_when_idle()``: it closes its connections when its last call ends.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from routerl.descriptors.model import Endpoint, ModelDescriptor
from routerl.live.errors import ProviderError, ProviderTimeout, ProviderUnavailable, shorten

log = logging.getLogger(__name__)

NO_KEY = "no-key"  # sent when the endpoint names no key variable (e.g. a local vLLM server)
RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry 429/5xx/connection errors.

    Attributes:
        attempts: tries in all (1 = no retry).
        base_delay_s: the first wait; doubled after each failed try.
        max_delay_s: the longest wait; a ``Retry-After`` above it ends the retries.
        retry_timeouts: also retry timed-out calls (off by default).
    """

    attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    retry_timeouts: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"field 'attempts': must be an integer >= 1, got {self.attempts!r}")
        for name in ("base_delay_s", "max_delay_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"field '{name}': must be a finite number >= 0, got {value!r}")

    def backoff_s(self, failed_tries: int) -> float:
        """The exponential wait after ``failed_tries`` failures (1, 2, ...), capped."""
        return min(self.max_delay_s, self.base_delay_s * (2 ** (failed_tries - 1)))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date), or None."""
    if value is None or not str(value).strip():
        return None
    value = str(value).strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class ProviderAnswer:
    """One successful call.

    ``usage_estimated`` is True when the provider reported no usage and the token counts are a
    4-characters-per-token estimate; ``tries`` counts the HTTP requests made (1 + retries).
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    tries: int = 1
    usage_estimated: bool = False


def call_cost_usd(prompt_tokens: float, completion_tokens: float, input_price_per_mtok: float, output_price_per_mtok: float) -> float:
    """USD cost of one call from its token usage and per-million-token prices."""
    return (prompt_tokens * input_price_per_mtok + completion_tokens * output_price_per_mtok) / 1e6


def _estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _token_count(value: Any) -> int | None:
    """``value`` when it is a token count (an int >= 0, not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _http_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(timeout errors, other transport errors) of the HTTP libraries the ``openai`` client may
    use (``httpx``, or ``httpx2`` in newer releases) -- raised while a body is read."""
    timeouts: list[type] = []
    transport: list[type] = []
    for name in ("httpx", "httpx2"):
        module = sys.modules.get(name)
        if module is not None:
            timeouts.append(module.TimeoutException)
            transport.append(module.TransportError)
    return tuple(timeouts), tuple(transport)


Messages = Sequence[Mapping[str, str]]


class ChatProvider:
    """Calls one model through the ``openai`` client (see the module docstring).

    Args:
        endpoint: base URL, provider model name, key variable name.
        input_price_per_mtok, output_price_per_mtok: USD per million tokens, for ``cost_usd``.
        model_id: the id used in errors and accounting (defaults to the provider model name).
        timeout_s: per-request timeout in seconds (each try, request sent to last byte read).
        retry: the retry policy.
        max_tokens: an optional cap on the answer length; temperature: 0 by default (greedy).
        env: where to read the key from (``os.environ`` by default).
        sleep: the wait function (tests replace it).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        input_price_per_mtok: float,
        output_price_per_mtok: float,
        model_id: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        max_tokens: int | None = None,
        temperature: float | None = 0.0,
        env: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not isinstance(endpoint, Endpoint):
            raise ValueError("field 'endpoint': must be an Endpoint")
        endpoint.check()  # the registry's rule (a DescriptorError, a ValueError naming the field)
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"field 'timeout_s': must be a positive number, got {timeout_s!r}")
        self.endpoint = endpoint
        self.model_id = model_id or endpoint.model_name
        self.input_price_per_mtok = float(input_price_per_mtok)
        self.output_price_per_mtok = float(output_price_per_mtok)
        self.timeout_s = float(timeout_s)
        self.retry = retry or RetryPolicy()
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._sleep = sleep
        self._client = self._make_client(self._read_key(env if env is not None else os.environ))
        self._uses = 0  # calls (and leases, see hold) using the client now
        self._retired = False
        self._closed = False
        self._uses_lock = threading.Lock()

    @classmethod
    def from_descriptor(cls, desc: ModelDescriptor, **options: Any) -> "ChatProvider":
        """A provider for a descriptor that carries an ``endpoint`` (its prices and id)."""
        if desc.endpoint is None:
            raise ValueError(f"model {desc.id!r}: field 'endpoint' is not set; the model cannot be called")
        return cls(
            desc.endpoint,
            input_price_per_mtok=desc.input_price_per_mtok,
            output_price_per_mtok=desc.output_price_per_mtok,
            model_id=desc.id,
            **options,
        )

    def __repr__(self) -> str:  # never shows the key
        return f"ChatProvider(model_id={self.model_id!r}, base_url={self.endpoint.base_url!r}, model_name={self.endpoint.model_name!r})"

    # -- setup ---------------------------------------------------------------------------------
    def _read_key(self, env: Mapping[str, str]) -> str:
        name = self.endpoint.api_key_env
        if not name:
            return NO_KEY
        key = env.get(name)
        if not key:
            raise ProviderError(self.model_id, f"environment variable {name} (field 'endpoint.api_key_env') is not set")
        return key

    def _make_client(self, key: str):
        import openai  # imported here: only live calls need it

        return openai.OpenAI(api_key=key, base_url=self.endpoint.base_url, timeout=self.timeout_s, max_retries=0)

    # -- calls ---------------------------------------------------------------------------------
    def complete(self, messages: Messages | str, *, timeout_s: float | None = None) -> ProviderAnswer:
        """Send a chat completion; retries per the policy. Raises a ``ProviderError`` subclass.

        ``messages``: OpenAI chat messages, or a string sent as one user message. ``timeout_s``: a
        deadline for this whole call, retries and their waits included (e.g. a request's
        remaining time); each try gets the lower of it and the per-request timeout.
        """
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        started = time.monotonic()
        deadline = None if timeout_s is None else started + max(0.001, float(timeout_s))
        failed = 0
        self.hold()
        try:
            while True:
                timeout = self.timeout_s if deadline is None else max(0.001, min(self.timeout_s, deadline - time.monotonic()))
                try:
                    data = self._request(messages, timeout)
                    return self._answer(data, messages, (time.monotonic() - started) * 1000.0, failed + 1)
                except ProviderError as exc:
                    failed += 1
                    wait, note = self._retry_wait(exc, failed)
                    if wait is not None and deadline is not None and time.monotonic() + wait >= deadline:
                        wait, note = None, f"no time for a retry before the {float(timeout_s):g} s deadline"
                    if wait is None:
                        if failed > 1:
                            note = f"{note}; " if note else ""
                            raise _with_reason(exc, f"{exc.reason} ({note}{failed} tries)") from None
                        if note:
                            raise _with_reason(exc, f"{exc.reason} ({note})") from None
                        raise
                    log.info("%s: %s; retry %d of %d in %.2f s", self.model_id, exc.reason, failed, self.retry.attempts - 1, wait)
                    self._sleep(wait)
        finally:
            self.release()

    def _retry_wait(self, exc: ProviderError, failed: int) -> tuple[float | None, str]:
        """(seconds to wait before the next try, or None to give up; a note on why not)."""
        if failed >= self.retry.attempts:
            return None, ""
        if isinstance(exc, ProviderTimeout):
            return (self.retry.backoff_s(failed), "") if self.retry.retry_timeouts else (None, "")
        if not isinstance(exc, ProviderUnavailable):
            return None, ""
        wait = self.retry.backoff_s(failed)
        retry_after = exc.retry_after_s
        if retry_after is not None:
            if retry_after > self.retry.max_delay_s:
                return None, f"Retry-After {retry_after:g} s exceeds the max delay {self.retry.max_delay_s:g} s"
            wait = max(wait, retry_after)
        return wait, ""

    def _request(self, messages: Messages, timeout: float) -> Any:
        """One try: the decoded JSON body of a 2xx answer, read within ``timeout`` seconds in all."""
        import openai

        options: dict[str, Any] = {}
        if self.max_tokens is not None:
            options["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            options["temperature"] = self.temperature
        try_deadline = time.monotonic() + timeout
        timeouts, transport = _http_errors()
        try:
            with self._client.chat.completions.with_streaming_response.create(
                model=self.endpoint.model_name, messages=list(messages), timeout=timeout, **options
            ) as response:
                chunks = []
                for chunk in response.iter_bytes():  # each read waits at most `timeout`
                    chunks.append(chunk)
                    if time.monotonic() > try_deadline:
                        raise ProviderTimeout(self.model_id, f"no answer within {round(timeout, 3):g} s (the body was still arriving)")
            return json.loads(b"".join(chunks).decode("utf-8"))
        except ProviderError:
            raise
        except openai.APITimeoutError:
            raise ProviderTimeout(self.model_id, f"no answer within {round(timeout, 3):g} s") from None
        except openai.APIConnectionError as exc:
            raise ProviderUnavailable(self.model_id, f"connection failed ({type(exc.__cause__ or exc).__name__})") from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in RETRYABLE_STATUS:
                err = ProviderUnavailable(self.model_id, f"HTTP {status}", status)
                err.retry_after_s = parse_retry_after(exc.response.headers.get("retry-after"))
                raise err from None
            if status in (401, 403):  # the body may echo part of the key: never repeat it
                detail = f"authentication failed (check the key in ${self.endpoint.api_key_env or '<none>'})"
            else:
                detail = shorten(exc.message)
            raise ProviderError(self.model_id, f"HTTP {status}: {detail}", status) from None
        except openai.OpenAIError as exc:
            raise ProviderError(self.model_id, f"bad response ({type(exc).__name__})") from None
        except timeouts:  # a body read that waited past the timeout
            raise ProviderTimeout(self.model_id, f"no answer within {round(timeout, 3):g} s (the body stopped arriving)") from None
        except transport as exc:  # the connection broke while the body was read (e.g. a truncated body)
            raise ProviderUnavailable(self.model_id, f"connection failed ({type(exc).__name__})") from None
        except ValueError as exc:  # not UTF-8, not JSON
            raise ProviderError(self.model_id, f"malformed response ({type(exc).__name__}: {shorten(exc, 80)})") from None
        except Exception as exc:  # noqa: BLE001 - any other client failure (e.g. a closed client) is this call's
            log.warning("%s: the HTTP client failed", self.model_id, exc_info=True)
            raise ProviderError(self.model_id, f"client error ({type(exc).__name__}: {shorten(exc, 80)})") from None

    def _answer(self, data: Any, messages: Messages, latency_ms: float, tries: int) -> ProviderAnswer:
        """The answer in a decoded body; a ``ProviderError`` (carrying the billed cost, when the
        provider reported usage) when it has no text."""
        try:
            text = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            text = None
        usage = data.get("usage") if isinstance(data, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        pt, ct = _token_count(usage.get("prompt_tokens")), _token_count(usage.get("completion_tokens"))
        if not isinstance(text, str):
            if pt is None or ct is None:
                raise ProviderError(self.model_id, "malformed response: no choices[0].message.content")
            cost = call_cost_usd(pt, ct, self.input_price_per_mtok, self.output_price_per_mtok)
            raise ProviderError(self.model_id, f"malformed response: no choices[0].message.content (billed {pt}+{ct} tokens)",
                                prompt_tokens=pt, completion_tokens=ct, cost_usd=cost)
        estimated = pt is None or ct is None
        if estimated:
            if usage:
                log.warning("%s: the provider reported unusable token usage (prompt_tokens=%r, completion_tokens=%r); "
                            "cost is estimated from text length", self.model_id, usage.get("prompt_tokens"), usage.get("completion_tokens"))
            else:
                log.warning("%s: the provider reported no token usage; cost is estimated from text length", self.model_id)
            pt = sum(_estimate_tokens(str(m.get("content", ""))) for m in messages)
            ct = _estimate_tokens(text)
        cost = call_cost_usd(pt, ct, self.input_price_per_mtok, self.output_price_per_mtok)
        return ProviderAnswer(text, int(pt), int(ct), cost, latency_ms, tries, estimated)

    # -- lifetime ------------------------------------------------------------------------------
    def hold(self) -> None:
        """Count one more user of the client (``complete`` does; a pool's lease too): a retired
        provider is not closed while it has any."""
        with self._uses_lock:
            self._uses += 1

    def release(self) -> None:
        """The end of a ``hold``; closes a retired provider whose last user this was."""
        with self._uses_lock:
            self._uses -= 1
            close = self._claim_close()
        if close:
            self._client.close()

    def close_when_idle(self) -> None:
        """Retire the provider: close it now when no call is using it, else when the last ends."""
        with self._uses_lock:
            self._retired = True
            close = self._claim_close()
        if close:
            self._client.close()

    def _claim_close(self) -> bool:
        """Under ``_uses_lock``: True (once) when a retired provider has no user left; the caller
        then closes the client, outside the lock."""
        close = self._retired and self._uses == 0 and not self._closed
        self._closed = self._closed or close
        return close

    def close(self) -> None:
        """Close the HTTP connections (now, even while calls use them)."""
        with self._uses_lock:
            self._closed = True
        self._client.close()


def _with_reason(exc: ProviderError, reason: str) -> ProviderError:
    """A copy of ``exc`` (same type, status, billed usage, ``Retry-After``) with another reason."""
    out = type(exc)(exc.model_id, reason, exc.status, prompt_tokens=exc.prompt_tokens,
                    completion_tokens=exc.completion_tokens, cost_usd=exc.cost_usd)
    if getattr(exc, "retry_after_s", None) is not None:
        out.retry_after_s = exc.retry_after_s
    return out

