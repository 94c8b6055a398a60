"""Route requests: validation and the candidate pool.

``parse_route_request`` turns a ``routerl.v1.RouteRequest`` into a checked ``RouteParams`` (or
raises ``RequestError`` naming the field at fault); ``candidate_pool`` applies the allow-list,
deny-list and hard limits to the registry's models and raises ``EmptyPoolError`` (saying which
filter removed what) when nothing is left. Both are pure functions, independent of gRPC.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Sequence

from routerl.descriptors.model import MAX_DOMAIN_LEN, MAX_ID_LEN, ModelDescriptor, shown_id
from routerl.routers.base import MODES, Attempt, Query
from routerl.server.convert import MODE_NAMES
from routerl.server.proto import router_pb2 as pb

MAX_KNOB = 1e9
MAX_REQUEST_ID_LEN = 128


class RequestError(ValueError):
    """An invalid request; ``field`` names the request field at fault (e.g. ``limits.max_est_cost_usd``)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"field '{field_name}': {message}")
        self.field = field_name


class EmptyPoolError(LookupError):
    """No registered model passes the request's filters."""


@dataclass(frozen=True)
class RequestLimits:
    """Server-side bounds on a route request (see ``ServerConfig``)."""

    max_query_chars: int = 100_000
    max_think_budget: int = 4_096
    max_attempts: int = 8
    max_response_chars: int = 200_000
    max_model_list: int = 1_000
    max_prompt_tokens: int = 10_000_000
    default_mode: str = "balanced"


@dataclass(frozen=True)
class Filters:
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    max_input_price_per_mtok: float | None = None
    max_output_price_per_mtok: float | None = None
    max_est_cost_usd: float | None = None
    min_context_window: int | None = None


@dataclass(frozen=True)
class RouteParams:
    query: Query
    knob: float
    filters: Filters = field(default_factory=Filters)
    think_budget: int = 0
    attempts: tuple[Attempt, ...] = ()
    request_id: str = ""


def _text(name: str, value: str, max_len: int, *, required: bool = False) -> str:
    if required and not value.strip():
        raise RequestError(name, "must not be empty")
    if len(value) > max_len:
        raise RequestError(name, f"must be at most {max_len} characters, got {len(value)}")
    return value


def _non_negative(name: str, value: float, hi: float = math.inf) -> float:
    if math.isnan(value) or math.isinf(value):
        raise RequestError(name, f"must be finite, got {value}")
    if value < 0:
        raise RequestError(name, f"must be >= 0, got {value:g}")
    if value > hi:
        raise RequestError(name, f"must be at most {hi:g}, got {value:g}")
    return float(value)


def _ids(name: str, values: Sequence[str], limits: RequestLimits) -> tuple[str, ...]:
    if len(values) > limits.max_model_list:
        raise RequestError(name, f"must list at most {limits.max_model_list} model ids, got {len(values)}")
    for n, value in enumerate(values):
        if not value.strip() or len(value) > MAX_ID_LEN:
            raise RequestError(f"{name}[{n}]", f"must be a model id of 1 to {MAX_ID_LEN} characters")
    return tuple(dict.fromkeys(values))


def parse_route_request(req: pb.RouteRequest, limits: RequestLimits) -> RouteParams:
    """Check every field of ``req`` against ``limits``; ``RequestError`` names the first bad one."""
    text = _text("query", req.query, limits.max_query_chars, required=True)
    which = req.WhichOneof("cost")
    if which == "knob":
        knob = _non_negative("knob", req.knob, MAX_KNOB)
    elif which == "mode" and req.mode != pb.MODE_UNSPECIFIED:
        if req.mode not in MODE_NAMES:
            raise RequestError("mode", f"unknown mode {req.mode}; expected one of {', '.join(MODE_NAMES.values())}")
        knob = MODES[MODE_NAMES[req.mode]]
    else:
        knob = MODES[limits.default_mode]
    if req.think_budget > limits.max_think_budget:
        raise RequestError("think_budget", f"must be at most {limits.max_think_budget} tokens, got {req.think_budget}")
    if req.prompt_tokens > limits.max_prompt_tokens:
        raise RequestError("prompt_tokens", f"must be at most {limits.max_prompt_tokens}, got {req.prompt_tokens}")
    domain = _text("domain", req.domain, MAX_DOMAIN_LEN)
    request_id = _text("request_id", req.request_id, MAX_REQUEST_ID_LEN)
    if request_id and not (request_id.isascii() and request_id.isprintable()):
        # It is echoed in the routerl-request-id metadata, whose values are printable ASCII.
        raise RequestError("request_id", "must be printable ASCII")

    filters = Filters(allow=_ids("allow", req.allow, limits), deny=_ids("deny", req.deny, limits))
    if req.HasField("limits"):
        lim = req.limits
        bounds = {}
        for name in ("max_input_price_per_mtok", "max_output_price_per_mtok", "max_est_cost_usd"):
            if lim.HasField(name):
                bounds[name] = _non_negative(f"limits.{name}", getattr(lim, name))
        if lim.HasField("min_context_window"):
            if lim.min_context_window < 0:
                raise RequestError("limits.min_context_window", f"must be >= 0, got {lim.min_context_window}")
            bounds["min_context_window"] = int(lim.min_context_window)
        filters = Filters(allow=filters.allow, deny=filters.deny, **bounds)

    if len(req.attempts) > limits.max_attempts:
        raise RequestError("attempts", f"must hold at most {limits.max_attempts} attempts, got {len(req.attempts)}")
    attempts = []
    for n, att in enumerate(req.attempts):
        _text(f"attempts[{n}].model_id", att.model_id, MAX_ID_LEN, required=True)
        _text(f"attempts[{n}].response", att.response, limits.max_response_chars)
        cost = _non_negative(f"attempts[{n}].cost_usd", att.cost_usd)
        attempts.append(Attempt(att.model_id, att.response, cost))

    query = Query(text=text, domain=domain or None, prompt_tokens=float(req.prompt_tokens) or None)
    return RouteParams(
        query=query,
        knob=knob,
        filters=filters,
        think_budget=int(req.think_budget),
        attempts=tuple(attempts),
        request_id=request_id or uuid.uuid4().hex,
    )


def check_attempts(models: Sequence[ModelDescriptor], params: RouteParams) -> None:
    """A ``RequestError`` on ``attempts[i].model_id`` when an attempt names no registered model (the
    router would otherwise accept or count an answer from a model the registry does not have), or
    when the last attempt, whose answer the router may accept, is from a model the request's
    ``deny`` lists or its ``allow`` leaves out (accepting it would choose that model)."""
    registered = {m.id for m in models}
    for n, attempt in enumerate(params.attempts):
        if attempt.model_id not in registered:
            raise RequestError(f"attempts[{n}].model_id", f"{shown_id(attempt.model_id)!r} is not a registered model")
    if params.attempts:
        n, last = len(params.attempts) - 1, params.attempts[-1].model_id
        f = params.filters
        if last in f.deny or (f.allow and last not in f.allow):
            rule = "in deny" if last in f.deny else "not in allow"
            raise RequestError(f"attempts[{n}].model_id", f"{shown_id(last)!r} is {rule}, but the last attempt's answer "
                               "may be accepted: leave it out of deny (allow it), or leave out the attempt")


def candidate_pool(models: Sequence[ModelDescriptor], params: RouteParams) -> list[ModelDescriptor]:
    """The registered models that pass every filter, in registry order; ``EmptyPoolError`` when none."""
    f = params.filters
    pool = list(models)
    removed: list[str] = []

    def keep(label: str, predicate) -> None:
        nonlocal pool
        before = len(pool)
        pool = [m for m in pool if predicate(m)]
        if len(pool) < before:
            removed.append(f"{label} removed {before - len(pool)}")

    if f.allow:
        allowed = set(f.allow)
        keep("allow", lambda m: m.id in allowed)
    if f.deny:
        denied = set(f.deny)
        keep("deny", lambda m: m.id not in denied)
    if f.max_input_price_per_mtok is not None:
        keep("limits.max_input_price_per_mtok", lambda m: m.input_price_per_mtok <= f.max_input_price_per_mtok)
    if f.max_output_price_per_mtok is not None:
        keep("limits.max_output_price_per_mtok", lambda m: m.output_price_per_mtok <= f.max_output_price_per_mtok)
    if f.max_est_cost_usd is not None:
        tokens = params.query.tokens
        keep("limits.max_est_cost_usd", lambda m: m.estimate_cost_usd(tokens) <= f.max_est_cost_usd)
    if f.min_context_window is not None and f.min_context_window > 0:
        keep("limits.min_context_window", lambda m: m.context_window >= f.min_context_window)
    if not pool:
        detail = "; ".join(removed) if removed else "the registry is empty"
        unknown = sorted(set(f.allow) - {m.id for m in models})
        if unknown:
            detail += f"; allow names unregistered ids: {', '.join(unknown[:10])}"
        raise EmptyPoolError(f"no candidate model left after filters ({len(models)} registered; {detail})")
    return pool
