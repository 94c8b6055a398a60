"""Typed errors of live model calls.

``ProviderError`` is the base: a call that did not produce an answer. ``ProviderTimeout``: the
provider did not answer within the timeout. ``ProviderUnavailable``: rate limited (429), a server
error (5xx) or no connection, still so after the configured retries. Any other failure (a 4xx
such as a bad key or an unknown model name, a malformed response, a missing key variable) is a
plain ``ProviderError`` and is not retried. Messages never contain an API key.

A failed call may still have been billed: a provider that reports token usage on an answer with
no content (a refusal, a tool call, a length cut) charges for it. Such an error carries that
usage and its cost (``prompt_tokens``, ``completion_tokens``, ``cost_usd``); every other error
carries zeros.
"""

from __future__ import annotations

import math


class ProviderError(Exception):
    """A model call that produced no answer.

    Attributes:
        model_id: the descriptor id (or provider model name) of the model called.
        reason: a short, loggable reason (no secrets), e.g. ``"HTTP 500 after 3 tries"``.
        status: the HTTP status when there was one, else None.
        prompt_tokens, completion_tokens, cost_usd: what the provider billed for the failed
            call (its reported usage; 0 when it reported none). A cost that is not a finite
            number >= 0 makes all three 0, and a token count that is not an int >= 0 is 0, so
            whoever adds them up (a request's spend, the ledger, a probe run) never counts a
            bogus value.
    """

    kind = "error"

    def __init__(self, model_id: str, reason: str, status: int | None = None, *, prompt_tokens: int = 0,
                 completion_tokens: int = 0, cost_usd: float = 0.0):
        super().__init__(f"{model_id}: {reason}")
        self.model_id = model_id
        self.reason = reason
        self.status = status
        billed = not isinstance(cost_usd, bool) and isinstance(cost_usd, (int, float)) and math.isfinite(cost_usd) and cost_usd >= 0
        self.cost_usd = float(cost_usd) if billed else 0.0
        self.prompt_tokens = _count(prompt_tokens) if billed else 0
        self.completion_tokens = _count(completion_tokens) if billed else 0


def _count(value) -> int:
    """``value`` when it is a token count (an int >= 0, not a bool), else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class ProviderTimeout(ProviderError):
    """The provider did not answer within the timeout."""

    kind = "timeout"


class ProviderUnavailable(ProviderError):
    """Rate limited, a server error or unreachable, after every retry. ``retry_after_s``: the
    wait the server asked for (``Retry-After``), when it sent one."""

    kind = "unavailable"
    retry_after_s: float | None = None


def shorten(text: object, limit: int = 200) -> str:
    """``text`` on one line (white space folded), cut to ``limit`` characters with "...": for
    reasons that quote what a provider or a client said."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
