"""The gRPC service in-process: routing, registry RPCs and every error status.

A real ``grpc.Server`` on loopback (port 0) with a small catalog; routers are injected where a
test needs a slow one or one that records its arguments.
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from routerl.client import RouterClient, RouterClientError
from routerl.descriptors.model import Endpoint, ModelDescriptor
from routerl.routers.descriptor_score import DescriptorScoreRouter
from routerl.server.app import RouterServer
from routerl.server.config import ServerConfig
from routerl.server.proto import router_pb2 as pb
from routerl.server.requests import RequestLimits
from routerl.server.service import RouterService, RpcFailure
from routerl.server.store import ModelStore

CODE = grpc.StatusCode
MAX_RECEIVE = 256 * 1024
MAX_QUERY = 2_000


def catalog() -> list[ModelDescriptor]:
    return [
        ModelDescriptor("big", 3.0, 15.0, context_window=200_000, sample_scores={"math": 0.95, "code": 0.9},
                        sample_counts={"math": 100, "code": 100}, mean_output_tokens=300),
        ModelDescriptor("small", 0.1, 0.4, context_window=16_000, sample_scores={"math": 0.7, "code": 0.4},
                        sample_counts={"math": 100, "code": 100}, mean_output_tokens=300),
        ModelDescriptor("mid", 0.5, 1.5, context_window=128_000, sample_scores={"math": 0.85, "code": 0.7},
                        sample_counts={"math": 100, "code": 100}, mean_output_tokens=300),
    ]


class SlowRouter(DescriptorScoreRouter):
    name = "slow"

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay

    def decide(self, query, candidates, knob, attempts=()):
        time.sleep(self.delay)
        return super().decide(query, candidates, knob, attempts)


class RecordingRouter(DescriptorScoreRouter):
    """Records the think budget it receives and returns think text."""

    name = "recording"

    def __init__(self):
        super().__init__()
        self.budgets = []

    def decide(self, query, candidates, knob, attempts=(), think_budget=0):
        self.budgets.append(think_budget)
        decision = super().decide(query, candidates, knob, attempts)
        decision.think = f"budget {think_budget}"
        return decision


def start(tmp_path, router=None, **config):
    cfg = ServerConfig(port=0, db=str(tmp_path / "r.db"), max_receive_bytes=MAX_RECEIVE, max_query_chars=MAX_QUERY,
                       max_think_budget=512, grace_s=2.0, **config)
    store = ModelStore(cfg.db, catalog())
    server = RouterServer(cfg, router=router, store=store)
    server.start()
    return server


@pytest.fixture
def server(tmp_path):
    srv = start(tmp_path)
    yield srv
    srv.stop(0).wait()
    srv.close()


@pytest.fixture
def client(server):
    with RouterClient(f"127.0.0.1:{server.port}", timeout=5.0, max_message_bytes=4 * MAX_RECEIVE) as c:
        yield c


def status(fn):
    with pytest.raises(RouterClientError) as info:
        fn()
    return info.value


# -- routing -------------------------------------------------------------------------------------
def test_route_modes_and_ranking(client):
    quality = client.route("Solve 2x + 3 = 7", mode="quality", domain="math")
    assert quality.model_id == "big" and quality.action == "route" and quality.router == "descriptor-score"
    assert [m for m, _ in quality.ranking][0] == "big" and len(quality.ranking) == 3
    assert abs(sum(p for _, p in quality.ranking) - 1) < 1e-6
    assert quality.est_cost_usd > 0 and quality.registry_version == 1 and quality.request_id
    cost = client.route("Solve 2x + 3 = 7", mode="cost", domain="math")
    assert cost.model_id == "small" and cost.knob == 1.0
    assert client.route("hi", knob=0.0, request_id="req-1").request_id == "req-1"
    assert client.route("hi").knob == 0.1  # the default mode: balanced


def test_route_filters(client):
    assert client.route("q", mode="quality", allow=["small", "mid"]).model_id == "mid"
    assert client.route("q", mode="quality", deny=["big"]).model_id == "mid"
    assert client.route("q", mode="quality", max_output_price_per_mtok=1.0).model_id == "small"
    assert client.route("q", mode="quality", min_context_window=150_000).model_id == "big"
    result = client.route("q", mode="quality", max_est_cost_usd=0.001)
    assert {m for m, _ in result.ranking} <= {"small", "mid"}


def test_attempts_and_think_budget(tmp_path):
    router = RecordingRouter()
    srv = start(tmp_path, router=router)
    try:
        with RouterClient(f"127.0.0.1:{srv.port}", timeout=5.0) as c:
            accepted = c.route("q", attempts=[("small", "42")])
            assert accepted.action == "accept" and accepted.model_id == "small"
            routed = c.route("q", think_budget=128)
            assert routed.think == "budget 128" and router.budgets[-1] == 128
            err = status(lambda: c.route("q", think_budget=513))
            assert err.code == CODE.INVALID_ARGUMENT and err.field == "think_budget"
    finally:
        srv.stop(0).wait()
        srv.close()


def test_registered_model_is_routable_at_once_and_removed_is_gone(client):
    new = ModelDescriptor("new-math", 0.05, 0.1, sample_scores={"math": 0.99}, sample_counts={"math": 50})
    assert client.route("2+2?", mode="quality", domain="math").model_id == "big"
    client.register_model(new)
    result = client.route("2+2?", mode="quality", domain="math")
    assert result.model_id == "new-math" and result.registry_version == 2
    assert client.get_model("new-math") == new
    client.update_model(ModelDescriptor("new-math", 0, 0, sample_scores={"math": 0.1}), fields=["sample_scores"])
    assert client.route("2+2?", mode="quality", domain="math").model_id == "big"
    assert client.get_model("new-math").input_price_per_mtok == 0.05, "a masked update keeps other fields"
    assert client.remove_model("new-math") == 4
    assert "new-math" not in {m.id for m in client.list_models()}


# -- error statuses ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"query": "x" * (MAX_QUERY + 1)}, "query"),
        ({"knob": float("nan")}, "knob"),
        ({"knob": float("inf")}, "knob"),
        ({"knob": -0.5}, "knob"),
        ({"max_input_price_per_mtok": -1.0}, "limits.max_input_price_per_mtok"),
        ({"max_est_cost_usd": float("nan")}, "limits.max_est_cost_usd"),
        ({"min_context_window": -1}, "limits.min_context_window"),
        ({"allow": [""]}, "allow[0]"),
        ({"attempts": [("", "text")]}, "attempts[0].model_id"),
        ({"attempts": [("no-such-model", "text")]}, "attempts[0].model_id"),  # not registered
        ({"attempts": [("small", "t"), ("big", "t")], "deny": ["big"]}, "attempts[1].model_id"),  # could be accepted
        ({"attempts": [("big", "t")], "allow": ["small", "mid"]}, "attempts[0].model_id"),
        ({"domain": "d" * 65}, "domain"),
        ({"request_id": "r" * 129}, "request_id"),
    ],
)
def test_invalid_route_requests_name_the_field(client, kwargs, field):
    query = kwargs.pop("query", "a query")
    err = status(lambda: client.route(query, **kwargs))
    assert err.code == CODE.INVALID_ARGUMENT, err
    assert err.field == field and field in err.details


def test_updates_never_undo_each_other(client):
    """Masked updates of different fields from many clients at once all land (the mask is applied
    to the stored descriptor in the write transaction); an update made from a stale read (etag)
    is refused with ABORTED and writes nothing."""
    scores = {f"d{i}": 0.5 for i in range(8)}
    client.register_model(ModelDescriptor("shared", 1.0, 2.0, sample_scores=scores))

    def set_score(i):  # each thread merges one domain into the map it read, against its etag
        for _ in range(50):
            desc, etag = client.read_model("shared")
            try:
                return client.update_model(desc.with_changes(sample_scores={**desc.sample_scores, f"d{i}": 0.9}),
                                           fields=["sample_scores"], etag=etag)
            except RouterClientError as exc:
                assert exc.code == CODE.ABORTED and exc.field == "etag", exc
        raise AssertionError("never got through")

    def set_price(price):
        client.update_model(ModelDescriptor("shared", price, 0.0), fields=["input_price_per_mtok"])

    threads = [threading.Thread(target=set_score, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=set_price, args=(3.0,))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored, etag = client.read_model("shared")
    assert stored.sample_scores == {f"d{i}": 0.9 for i in range(8)}, stored.sample_scores
    assert (stored.input_price_per_mtok, stored.output_price_per_mtok) == (3.0, 2.0)

    stale = etag
    client.update_model(ModelDescriptor("shared", 4.0, 0.0), fields=["input_price_per_mtok"])
    err = status(lambda: client.update_model(stored.with_changes(output_price_per_mtok=9.0), fields=["output_price_per_mtok"],
                                             etag=stale))
    assert err.code == CODE.ABORTED and err.field == "etag" and "changed since it was read" in err.details
    assert client.get_model("shared").output_price_per_mtok == 2.0


def test_an_earlier_attempt_may_be_from_a_denied_model(client):
    """Only the last attempt's answer can be accepted; a denied model's earlier answer is context."""
    result = client.route("a query", knob=0.0, deny=["big"], attempts=[("big", "no idea"), ("mid", "42")])
    assert result.model_id != "big"
    assert result.action == "accept" and result.model_id == "mid" or result.action == "route"


def test_invalid_descriptors_name_the_field(client):
    stub_call = client._stub.RegisterModel
    cases = [
        (pb.RegisterModelRequest(), "model"),
        (pb.RegisterModelRequest(model=pb.ModelDescriptor(id="x", input_price_per_mtok=float("nan"))), "model.input_price_per_mtok"),
        (pb.RegisterModelRequest(model=pb.ModelDescriptor(id="x", output_price_per_mtok=-2)), "model.output_price_per_mtok"),
        (pb.RegisterModelRequest(model=pb.ModelDescriptor(id="bad id")), "model.id"),
        (pb.RegisterModelRequest(model=pb.ModelDescriptor(id="x", sample_scores={"m": 1.5})), "model.sample_scores.m"),
        (pb.RegisterModelRequest(model=pb.ModelDescriptor(id="x", sample_counts={"m": 3})), "model.sample_counts.m"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub_call(request, timeout=5)
        assert info.value.code() == CODE.INVALID_ARGUMENT
        trailing = tuple((m.key, m.value) for m in info.value.trailing_metadata())
        assert (("routerl-field", field),) == tuple(kv for kv in trailing if kv[0] == "routerl-field"), field
        assert any(k == "routerl-request-id" and v for k, v in trailing), "the request id comes back on errors too"
    bad_mask = pb.UpdateModelRequest(model=pb.ModelDescriptor(id="big"))
    bad_mask.update_mask.paths.append("no_such_field")
    with pytest.raises(grpc.RpcError) as info:
        client._stub.UpdateModel(bad_mask, timeout=5)
    assert info.value.code() == CODE.INVALID_ARGUMENT and "no_such_field" in info.value.details()
    assert [m.id for m in client.list_models()] == ["big", "small", "mid"], "nothing was stored"


def test_not_found_already_exists_failed_precondition(client):
    assert status(lambda: client.get_model("nope")).code == CODE.NOT_FOUND
    assert status(lambda: client.remove_model("nope")).code == CODE.NOT_FOUND
    assert status(lambda: client.update_model(ModelDescriptor("nope", 1, 1))).code == CODE.NOT_FOUND
    assert status(lambda: client.get_model("")).code == CODE.INVALID_ARGUMENT
    err = status(lambda: client.register_model(ModelDescriptor("big", 1, 1)))
    assert err.code == CODE.ALREADY_EXISTS and "big" in err.details
    assert client.get_model("big").input_price_per_mtok == 3.0, "the duplicate did not overwrite"
    err = status(lambda: client.route("q", allow=["ghost"]))
    assert err.code == CODE.FAILED_PRECONDITION and "ghost" in err.details
    err = status(lambda: client.route("q", deny=["big", "small", "mid"]))
    assert err.code == CODE.FAILED_PRECONDITION and "deny removed 3" in err.details
    err = status(lambda: client.route("q", min_context_window=10_000_000))
    assert err.code == CODE.FAILED_PRECONDITION


def invalid_field(call, request) -> tuple[str | None, str]:
    """Call a stub method that must answer INVALID_ARGUMENT: the ``routerl-field`` it names, and its message."""
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=5)
    assert info.value.code() == CODE.INVALID_ARGUMENT, info.value.details()
    fields = [m.value for m in info.value.trailing_metadata() if m.key == "routerl-field"]
    return (fields[0] if fields else None), info.value.details()


def test_an_id_with_a_final_newline_is_refused(client):
    model = pb.ModelDescriptor(id="zz\n", input_price_per_mtok=1, output_price_per_mtok=1)
    field, _ = invalid_field(client._stub.RegisterModel, pb.RegisterModelRequest(model=model))
    assert field == "model.id"
    assert [m.id for m in client.list_models()] == ["big", "small", "mid"]


def test_overlong_ids_are_invalid_argument_with_a_short_message(client):
    long_id = "x" * 20_000
    stub = client._stub
    for call, request, name in [
        (stub.GetModel, pb.GetModelRequest(id=long_id), "id"),
        (stub.RemoveModel, pb.RemoveModelRequest(id=long_id), "id"),
        (stub.UpdateModel, pb.UpdateModelRequest(model=pb.ModelDescriptor(id=long_id)), "model.id"),
        (stub.RegisterModel, pb.RegisterModelRequest(model=pb.ModelDescriptor(id=long_id)), "model.id"),
    ]:
        field, details = invalid_field(call, request)
        assert field == name and "at most 128 characters" in details and len(details) < 200, details
    assert status(lambda: client.get_model("x" * 128)).code == CODE.NOT_FOUND, "an id of the longest length is looked up"


@pytest.mark.parametrize(
    "endpoint, field",
    [
        (pb.Endpoint(base_url="not a url", model_name="m"), "model.endpoint.base_url"),
        (pb.Endpoint(base_url="http://localhost:8000/v1", model_name="m", api_key_env="has space"), "model.endpoint.api_key_env"),
        (pb.Endpoint(base_url="http://localhost:8000/v1"), "model.endpoint.model_name"),
    ],
)
def test_an_endpoint_no_provider_can_use_is_refused_at_register_and_update(client, endpoint, field):
    stub = client._stub
    model = pb.ModelDescriptor(id="ep", input_price_per_mtok=1, output_price_per_mtok=1, endpoint=endpoint)
    got, details = invalid_field(stub.RegisterModel, pb.RegisterModelRequest(model=model))
    assert got == field and f"field '{field}'" in details
    masked = pb.UpdateModelRequest(model=pb.ModelDescriptor(id="big", endpoint=endpoint))
    masked.update_mask.paths.append("endpoint")
    whole = pb.UpdateModelRequest(model=pb.ModelDescriptor(id="big", input_price_per_mtok=3, output_price_per_mtok=15,
                                                           endpoint=endpoint))
    for request in (masked, whole):
        assert invalid_field(stub.UpdateModel, request)[0] == field
    assert [m.id for m in client.list_models()] == ["big", "small", "mid"], "nothing was stored"
    assert client.get_model("big") == catalog()[0]


def test_an_endpoint_stored_before_the_check_does_not_block_updates(server, client):
    server.store.add(ModelDescriptor("legacy", 1, 1, endpoint=Endpoint("not a url", "m", "")))
    client.update_model(ModelDescriptor("legacy", 2, 2), fields=["input_price_per_mtok"])
    kept = client.get_model("legacy")
    assert kept.input_price_per_mtok == 2 and kept.endpoint == Endpoint("not a url", "m", "")
    client.update_model(kept.with_changes(output_price_per_mtok=3))  # whole, the endpoint unchanged
    assert client.get_model("legacy").output_price_per_mtok == 3
    err = status(lambda: client.update_model(kept.with_changes(endpoint=Endpoint("still not a url", "m", ""))))
    assert err.code == CODE.INVALID_ARGUMENT and err.field == "model.endpoint.base_url"
    fixed = Endpoint("http://localhost:8000/v1", "m", "")
    assert client.update_model(kept.with_changes(endpoint=fixed), fields=["endpoint"]).endpoint == fixed


def test_malformed_and_non_utf8_requests_are_rejected_and_server_lives_on(client):
    raw_route = client.channel.unary_unary("/routerl.v1.Router/Route")
    raw_register = client.channel.unary_unary("/routerl.v1.Router/RegisterModel")
    bad_utf8_query = b"\x0a\x03\xff\xfe\x41"  # field 1 (query), 3 bytes of invalid UTF-8
    bad_utf8_id = b"\x0a\x05\x0a\x03\xc3\x28\x41"  # model { id: invalid UTF-8 }
    truncated = b"\x0a\x50abc"  # declares 80 bytes, has 3
    garbage = b"\xff\xff\xff\xff\xff"
    for call, payload in [(raw_route, bad_utf8_query), (raw_register, bad_utf8_id), (raw_route, truncated), (raw_route, garbage)]:
        with pytest.raises(grpc.RpcError) as info:
            call(payload, timeout=5)
        assert info.value.code() == CODE.INVALID_ARGUMENT, payload
        assert "not a valid routerl.v1." in info.value.details()
    assert client.route("still serving?").model_id
    assert len(client.list_models()) == 3


def test_oversized_message_is_resource_exhausted(client):
    err = status(lambda: client.route("x" * (MAX_RECEIVE + 10)))
    assert err.code == CODE.RESOURCE_EXHAUSTED
    assert client.route("fine").model_id


def test_unknown_method_is_unimplemented(client):
    with pytest.raises(grpc.RpcError) as info:
        client.channel.unary_unary("/routerl.v1.Router/Nope")(b"", timeout=5)
    assert info.value.code() == CODE.UNIMPLEMENTED


# -- deadlines and shutdown ----------------------------------------------------------------------
class FakeContext:
    def __init__(self, remaining):
        self.remaining = remaining

    def time_remaining(self):
        return self.remaining

    def is_active(self):
        return self.remaining is None or self.remaining > 0


def test_expired_deadline_is_deadline_exceeded_before_any_work():
    service = RouterService(ModelStore(":memory:", catalog()), DescriptorScoreRouter(), RequestLimits())
    with pytest.raises(RpcFailure) as info:
        service.Route(pb.RouteRequest(query="q"), FakeContext(0.0))
    assert info.value.code == CODE.DEADLINE_EXCEEDED
    with pytest.raises(RpcFailure) as info:
        service.RegisterModel(pb.RegisterModelRequest(model=pb.ModelDescriptor(id="late")), FakeContext(-1.0))
    assert info.value.code == CODE.DEADLINE_EXCEEDED
    assert service.store.snapshot().get("late") is None
    assert service.Route(pb.RouteRequest(query="q"), FakeContext(None)).model_id


def test_slow_router_hits_client_deadline_and_server_survives(tmp_path):
    srv = start(tmp_path, router=SlowRouter(0.4))
    try:
        with RouterClient(f"127.0.0.1:{srv.port}", timeout=5.0) as c:
            err = status(lambda: c.route("q", timeout=0.1))
            assert err.code == CODE.DEADLINE_EXCEEDED
            assert c.route("q").model_id
    finally:
        srv.stop(0).wait()
        srv.close()


def test_graceful_stop_drains_in_flight_calls(tmp_path):
    srv = start(tmp_path, router=SlowRouter(0.5))
    target = f"127.0.0.1:{srv.port}"
    results = {}

    def slow_call():
        with RouterClient(target, timeout=5.0) as c:
            results["in_flight"] = c.route("q").model_id

    thread = threading.Thread(target=slow_call)
    thread.start()
    time.sleep(0.2)
    done = srv.stop(grace=3.0)
    with RouterClient(target, timeout=1.0) as c:
        err = status(lambda: c.list_models())
    assert err.code == CODE.UNAVAILABLE, "no new calls after stop"
    thread.join(5)
    assert results.get("in_flight") in {"big", "mid", "small"}, "the call in flight finished"
    assert done.wait(5)
    srv.close()
