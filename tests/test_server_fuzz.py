"""Fuzzing the wire: random RouteRequest, CompleteRequest and RegisterModel inputs against a live server.

Random text (any Unicode), NaN/inf/negative/huge numbers, long lists, random ids, unknown enum
values, and raw bytes at the wire level (random bytes, invalid UTF-8 in string fields). Each call
must end quickly with one of the documented statuses, and the server must keep serving. Bounded:
a fixed number of examples per test, each call with a 5 s deadline.
"""

from __future__ import annotations

import socket
import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server_service import catalog

from routerl.descriptors.model import Endpoint, ModelDescriptor
from routerl.server.app import RouterServer
from routerl.server.config import ServerConfig
from routerl.server.proto import router_pb2 as pb
from routerl.server.proto import router_pb2_grpc as pb_grpc
from routerl.server.store import ModelStore

CODE = grpc.StatusCode
DOCUMENTED = {
    CODE.OK, CODE.INVALID_ARGUMENT, CODE.NOT_FOUND, CODE.ALREADY_EXISTS, CODE.FAILED_PRECONDITION,
    CODE.RESOURCE_EXHAUSTED, CODE.DEADLINE_EXCEEDED,
    CODE.UNAVAILABLE,  # Complete: every provider failed
}
MAX_RECEIVE = 64 * 1024
CALL_TIMEOUT = 5.0
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
long_text = st.one_of(text, st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=100, max_size=3000))
ids = st.one_of(text, st.from_regex(r"[A-Za-z0-9._:@/+-]{1,20}", fullmatch=True), st.sampled_from(["big", "small", "mid"]))
weird_float = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e308, -1e-308, 5e-324]))
int64 = st.integers(-(2**63), 2**63 - 1)
uint32 = st.integers(0, 2**32 - 1)
id_list = st.one_of(st.lists(ids, max_size=8), st.integers(900, 1200).map(lambda n: [f"m{i}" for i in range(n)]))


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    cfg = ServerConfig(port=0, db=str(tmp / "r.db"), max_receive_bytes=MAX_RECEIVE, max_query_chars=2_000,
                       workers=4, grace_s=1.0, access_log="off", provider_timeout_s=1.0, provider_retries=1)
    with socket.socket() as closed:  # a loopback port nobody listens on: calls to "dead" fail at once
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    dead = ModelDescriptor("dead", 0.01, 0.01, sample_scores={"math": 0.5}, endpoint=Endpoint(dead_url, "dead", ""))
    srv = RouterServer(cfg, store=ModelStore(cfg.db, catalog() + [dead]))
    srv.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    yield pb_grpc.RouterStub(channel), channel
    channel.close()
    srv.stop(0).wait()
    srv.close()


def call_status(fn, request) -> CODE:
    t0 = time.monotonic()
    try:
        fn(request, timeout=CALL_TIMEOUT)
        code = CODE.OK
    except grpc.RpcError as exc:
        code = exc.code()
        assert exc.details() is None or "internal error" not in exc.details()
    assert time.monotonic() - t0 < CALL_TIMEOUT, "no hang"
    assert code in DOCUMENTED, code
    return code


@st.composite
def route_requests(draw) -> pb.RouteRequest:
    req = pb.RouteRequest(
        query=draw(long_text), allow=draw(id_list), deny=draw(st.lists(ids, max_size=4)),
        think_budget=draw(uint32), domain=draw(text), prompt_tokens=draw(uint32), request_id=draw(text),
    )  # fmt: skip
    cost = draw(st.sampled_from(["none", "knob", "mode"]))
    if cost == "knob":
        req.knob = draw(weird_float)
    elif cost == "mode":
        req.mode = draw(st.integers(-3, 9))  # open enum: unknown values reach the server
    if draw(st.booleans()):
        for name in ("max_input_price_per_mtok", "max_output_price_per_mtok", "max_est_cost_usd"):
            if draw(st.booleans()):
                setattr(req.limits, name, draw(weird_float))
        if draw(st.booleans()):
            req.limits.min_context_window = draw(int64)
    for _ in range(draw(st.integers(0, 10))):
        req.attempts.add(model_id=draw(ids), response=draw(long_text), cost_usd=draw(weird_float))
    return req


@st.composite
def descriptors(draw) -> pb.ModelDescriptor:
    msg = pb.ModelDescriptor(
        id=draw(ids), input_price_per_mtok=draw(weird_float), output_price_per_mtok=draw(weird_float),
        latency_ms=draw(weird_float), context_window=draw(int64), mean_output_tokens=draw(weird_float),
        description=draw(long_text), tags=draw(st.lists(text, max_size=6)),
        sample_scores=draw(st.dictionaries(text, weird_float, max_size=4)),
        sample_counts=draw(st.dictionaries(text, int64, max_size=4)),
        probe_results=draw(st.one_of(st.dictionaries(text, weird_float, max_size=4),
                                     st.integers(0, 5000).map(lambda n: {f"p{i}": 0.5 for i in range(n)}))),
    )  # fmt: skip
    if draw(st.booleans()):
        msg.endpoint.CopyFrom(pb.Endpoint(base_url=draw(text), model_name=draw(text), api_key_env=draw(text)))
    return msg


@FUZZ
@given(req=route_requests())
def test_fuzz_route(stub, req):
    s, _ = stub
    call_status(s.Route, req)


@st.composite
def complete_requests(draw) -> pb.CompleteRequest:
    route = draw(route_requests())
    req = pb.CompleteRequest(query=route.query, allow=route.allow, deny=route.deny, domain=route.domain,
                             prompt_tokens=route.prompt_tokens, request_id=route.request_id,
                             max_rounds=draw(uint32), key_id=draw(st.one_of(text, ids)))  # fmt: skip
    if route.WhichOneof("cost") == "knob":
        req.knob = route.knob
    elif route.WhichOneof("cost") == "mode":
        req.mode = route.mode
    if route.HasField("limits"):
        req.limits.CopyFrom(route.limits)
    if draw(st.booleans()):
        req.budget_usd = draw(weird_float)
    return req


@settings(FUZZ, max_examples=60)
@given(req=complete_requests())
def test_fuzz_complete(stub, req):
    """Complete over the catalog (no endpoints) and "dead" (an endpoint on a closed loopback
    port): no model can answer, so every call ends in a documented error, quickly."""
    s, _ = stub
    assert call_status(s.Complete, req) != CODE.OK


@FUZZ
@given(model=descriptors(), wrap=st.booleans())
def test_fuzz_register_model(stub, model, wrap):
    s, _ = stub
    call_status(s.RegisterModel, pb.RegisterModelRequest(model=model) if wrap else pb.RegisterModelRequest())


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    out, n = bytearray([number << 3 | 2]), len(payload)
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + payload


@FUZZ
@given(
    method=st.sampled_from(["Route", "RegisterModel", "GetModel", "ListModels", "Complete"]),
    raw=st.one_of(
        st.binary(max_size=200),
        st.builds(lambda n, b: _field(n, b), st.integers(1, 11), st.binary(max_size=60)),  # any bytes in a string field
        st.builds(lambda b: _field(1, _field(1, b)), st.binary(max_size=60)),  # RegisterModel { model { id: bytes } }
        st.builds(lambda k, v: _field(1, _field(6, _field(1, k) + v)), st.binary(max_size=20), st.binary(max_size=12)),
    ),
)
def test_fuzz_raw_bytes(stub, method, raw):
    _, channel = stub
    call_status(channel.unary_unary(f"/routerl.v1.Router/{method}"), raw)


def test_server_still_serves_after_fuzzing(stub):
    s, _ = stub
    assert s.Route(pb.RouteRequest(query="still alive?"), timeout=5).model_id
    listing = s.ListModels(pb.ListModelsRequest(), timeout=5)
    assert [m.id for m in listing.models][:4] == ["big", "small", "mid", "dead"]
    with pytest.raises(grpc.RpcError) as err:
        s.Complete(pb.CompleteRequest(query="still alive?", allow=["dead", "big"]), timeout=5)
    assert err.value.code() == CODE.UNAVAILABLE and "dead failed: unavailable: connection failed" in err.value.details()
