"""Load limits, micro-batching and ListModels paging, on loopback.

The load test saturates a server whose router sleeps (2 calls at once, 2 waiting): the excess is
refused with RESOURCE_EXHAUSTED at once, nothing waits past the queue limit, registrations made
during the load all land, and the server serves normally afterwards. Bounded: 12 route calls.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from test_server_service import SlowRouter, catalog, start

from routerl.client import RouterClient, RouterClientError
from routerl.descriptors.model import ModelDescriptor
from routerl.routers.base import Decision, RouteCall
from routerl.routers.descriptor_score import DescriptorScoreRouter
from routerl.server.admission import Lane, Overloaded
from routerl.server.batching import MicroBatcher
from routerl.server.proto import router_pb2 as pb
from routerl.server.proto import router_pb2_grpc as pb_grpc

CODE = grpc.StatusCode


class FakeContext:
    def __init__(self, remaining=None):
        self.remaining = remaining
        self.start = time.monotonic()

    def time_remaining(self):
        return None if self.remaining is None else self.remaining - (time.monotonic() - self.start)

    def is_active(self):
        return True


def stop(srv):
    srv.stop(0).wait()
    srv.close()


# -- admission -----------------------------------------------------------------------------------
def test_lane_bounds_concurrency_queue_and_wait():
    lane = Lane("route", concurrency=1, queue=1, timeout_s=0.5)
    outcomes = {}
    with lane.admit():
        def waiter():
            try:
                with lane.admit(FakeContext()):
                    outcomes["waiter"] = "ran"
            except Overloaded as exc:
                outcomes["waiter"] = exc.code

        t = threading.Thread(target=waiter)
        t.start()
        for _ in range(200):
            if lane.snapshot() == (1, 1):
                break
            time.sleep(0.005)
        assert lane.snapshot() == (1, 1)
        with pytest.raises(Overloaded) as info:  # the queue (1) is full: refused at once
            with lane.admit():
                pass
        assert info.value.code == CODE.RESOURCE_EXHAUSTED
        t.join(2)
    assert outcomes["waiter"] == CODE.RESOURCE_EXHAUSTED, "waited past queue_timeout"
    assert lane.snapshot() == (0, 0)

    lane = Lane("route", concurrency=1, queue=4, timeout_s=5.0)
    with lane.admit():
        t0 = time.monotonic()
        with pytest.raises(Overloaded) as info:
            with lane.admit(FakeContext(remaining=0.1)):
                pass
        assert info.value.code == CODE.DEADLINE_EXCEEDED and time.monotonic() - t0 < 1.0
    with lane.admit():  # free again
        pass


def test_load_is_shed_with_resource_exhausted_and_no_registration_is_lost(tmp_path):
    delay = 0.3
    srv = start(tmp_path, router=SlowRouter(delay), workers=2, max_queue=2, queue_timeout_s=1.0)
    target = f"127.0.0.1:{srv.port}"
    n_route, n_register = 12, 6
    try:
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.RouterStub(channel)
            stub.ListModels(pb.ListModelsRequest(), timeout=5)  # connected

            def route(i):
                t0 = time.monotonic()
                try:
                    stub.Route(pb.RouteRequest(query=f"q{i}"), timeout=10)
                    return CODE.OK, time.monotonic() - t0
                except grpc.RpcError as exc:
                    return exc.code(), time.monotonic() - t0

            registered, register_s = [], []

            def register_all():  # an admin registering models one after another during the load
                with RouterClient(target, timeout=10) as c:
                    for i in range(n_register):
                        t0 = time.monotonic()
                        c.register_model(ModelDescriptor(f"load-{i}", 0.1 * (i + 1), 0.2, sample_scores={"math": 0.5}))
                        register_s.append(time.monotonic() - t0)
                        registered.append(f"load-{i}")

            with ThreadPoolExecutor(n_route + 1) as pool:
                routes = [pool.submit(route, i) for i in range(n_route)]
                regs = pool.submit(register_all)
                results = [f.result(20) for f in routes]
                regs.result(20)

        codes = [code for code, _ in results]
        assert set(codes) <= {CODE.OK, CODE.RESOURCE_EXHAUSTED}, codes
        # 2 run and 2 wait; the rest are refused (a little slack for calls that arrive late)
        assert 2 <= codes.count(CODE.OK) <= 6, codes
        assert codes.count(CODE.RESOURCE_EXHAUSTED) >= n_route - 6
        refused = [s for code, s in results if code == CODE.RESOURCE_EXHAUSTED]
        assert max(refused) < 1.0 + 2 * delay, "a refusal never waits past the queue limit"
        assert max(s for _, s in results) < 3 * delay + 1.0, "latency stays bounded"

        with RouterClient(target, timeout=5) as c:
            assert c.route("after the storm").model_id, "the server keeps serving"
            ids = [m.id for m in c.list_models()]
            assert registered == [f"load-{i}" for i in range(n_register)]
            assert sum(register_s) < 3.0, "route load does not hold up the registry lane"
            assert set(registered) <= set(ids), "every registration made under load is there"
            assert c.registry_version() == 1 + n_register
        metrics = srv.metrics.render().decode()
        assert 'routerl_requests_total{code="RESOURCE_EXHAUSTED",method="Route"}' in metrics
    finally:
        stop(srv)


class SerialSlowRouter(SlowRouter):
    thread_safe = False


def test_a_router_that_is_not_thread_safe_runs_one_call_and_sheds_the_waiters(tmp_path):
    srv = start(tmp_path, router=SerialSlowRouter(0.8), workers=4, max_queue=1, queue_timeout_s=0.15)
    try:
        assert srv.route_lane.concurrency == 1 and srv.registry_lane.concurrency == 4
        with RouterClient(f"127.0.0.1:{srv.port}", timeout=5) as c:
            def route(_):
                t0 = time.monotonic()
                try:
                    c.route("q")
                    return CODE.OK, time.monotonic() - t0
                except RouterClientError as exc:
                    return exc.code, time.monotonic() - t0

            with ThreadPoolExecutor(3) as pool:
                results = list(pool.map(route, range(3)))
        codes = sorted(code.name for code, _ in results)
        assert codes == ["OK", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"], results
        assert all(s < 0.6 for code, s in results if code != CODE.OK), "waiters are shed, not held on the router's lock"
    finally:
        stop(srv)


# -- batching ------------------------------------------------------------------------------------
class BatchRouter(DescriptorScoreRouter):
    """decide_batch records batch sizes; decide (per request) is counted separately."""

    name = "batchy"
    thread_safe = False

    def __init__(self, delay=0.05):
        super().__init__()
        self.delay = delay
        self.batches = []
        self.single = 0

    def decide(self, query, candidates, knob, attempts=()):
        if "boom" in query.text:
            raise RuntimeError("boom")
        self.single += 1
        return super().decide(query, candidates, knob, attempts)

    def decide_batch(self, calls):
        self.batches.append(len(calls))
        time.sleep(self.delay)
        if any("boom" in c.query.text for c in calls):
            raise RuntimeError("a bad request in the batch")
        return [DescriptorScoreRouter.decide(self, c.query, c.candidates, c.knob, c.attempts) for c in calls]


def test_concurrent_routes_are_batched_and_answers_stay_matched(tmp_path):
    router = BatchRouter(delay=0.05)
    srv = start(tmp_path, router=router, workers=8, max_batch=8, batch_wait_ms=20)
    target = f"127.0.0.1:{srv.port}"
    models = ["big", "small", "mid"]
    try:
        with RouterClient(target, timeout=5) as c:
            assert c.route("warm up", allow=["mid"]).model_id == "mid"

            def one(i):
                want = models[i % 3]
                return want, c.route(f"query {i}", allow=[want], request_id=f"r{i}")

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(one, range(16)))
        for i, (want, got) in enumerate(answers):
            assert got.model_id == want and got.request_id == f"r{i}", "each caller gets its own decision"
        assert router.single == 0, "a batching router is only called through decide_batch"
        assert sum(router.batches) == 17 and max(router.batches) > 1, router.batches
        assert "routerl_route_batch_size_count" in srv.metrics.render().decode()
    finally:
        stop(srv)


def test_a_route_without_a_deadline_is_batched_and_answered(tmp_path):
    """A call with no deadline (grpcurl's and most clients' default): gRPC's time_remaining() is
    then ~9e18 s, which no wait accepts; it must mean "no limit", not INTERNAL."""
    router = BatchRouter(delay=0.0)
    srv = start(tmp_path, router=router, max_batch=8)
    try:
        with RouterClient(f"127.0.0.1:{srv.port}", timeout=None) as c:
            assert c.route("no deadline", allow=["mid"]).model_id == "mid"
        assert router.batches == [1]
    finally:
        stop(srv)
    batcher = MicroBatcher(BatchRouter(delay=0.0), max_batch=1, max_wait_s=0.0)
    try:
        assert batcher.submit(RouteCall(_query("q"), tuple(catalog()), 0.0), timeout=9.2e18).model_id == "big"
    finally:
        batcher.close()


def test_batch_failure_is_retried_per_request_and_only_the_bad_one_fails():
    router = BatchRouter(delay=0.02)
    batcher = MicroBatcher(router, max_batch=8, max_wait_s=0.05)
    pool = tuple(catalog())
    results = {}

    def call(text):
        try:
            with batcher.expect() as slot:
                results[text] = slot.submit(RouteCall(_query(text), pool, 0.0), timeout=5).model_id
        except Exception as exc:  # noqa: BLE001
            results[text] = exc

    threads = [threading.Thread(target=call, args=(t,)) for t in ("fine 1", "boom", "fine 2", "fine 3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    batcher.close()
    assert isinstance(results["boom"], RuntimeError)
    assert all(results[t] == "big" for t in ("fine 1", "fine 2", "fine 3")), results


def _query(text):
    from routerl.routers.base import Query

    return Query(text=text)


def test_batcher_skips_requests_whose_deadline_passed():
    router = BatchRouter(delay=0.3)
    batcher = MicroBatcher(router, max_batch=1, max_wait_s=0.0)
    pool = tuple(catalog())
    first = threading.Thread(target=lambda: batcher.submit(RouteCall(_query("slow"), pool, 0.0), timeout=5))
    first.start()
    for _ in range(400):  # the slow batch is running
        if router.batches:
            break
        time.sleep(0.005)
    from routerl.server.batching import BatchTimeout

    with pytest.raises(BatchTimeout):
        batcher.submit(RouteCall(_query("late"), pool, 0.0), timeout=0.05)
    first.join(5)
    batcher.close()
    assert router.batches == [1], "the expired request was never decided"


# -- ListModels size guard -----------------------------------------------------------------------
def test_list_models_pages_under_the_send_limit_and_omits_oversized_probe_results(tmp_path):
    srv = start(tmp_path, max_send_bytes=8 * 1024)
    try:
        with RouterClient(f"127.0.0.1:{srv.port}", timeout=5, max_message_bytes=1 << 20) as c:
            for i in range(6):
                c.register_model(ModelDescriptor(f"probed-{i}", 1, 1, probe_results={f"p{i}-{k}": 0.5 for k in range(120)}))
            huge = ModelDescriptor("huge", 1, 1, probe_results={f"h-{k:05d}": 0.25 for k in range(1500)})
            assert c.register_model(huge) == huge, "stored whole, though too large to echo"
            expected = ["big", "small", "mid"] + [f"probed-{i}" for i in range(6)] + ["huge"]

            pages, token = [], ""
            while True:
                page = c.list_models_page(page_token=token)
                assert page.ByteSize() <= 8 * 1024
                pages.append(page)
                token = page.next_page_token
                if not token:
                    break
            assert len(pages) > 2, "the listing was paged"
            assert [m.id for p in pages for m in p.models] == expected
            assert [i for p in pages for i in p.probe_results_omitted] == ["huge"]

            listed = c.list_models()
            assert [m.id for m in listed] == expected
            assert listed[3].probe_results and not listed[-1].probe_results
            got = c._stub.GetModel(pb.GetModelRequest(id="huge"), timeout=5)
            assert got.probe_results_omitted and not got.model.probe_results

            first = c.list_models_page(page_size=2)
            assert [m.id for m in first.models] == ["big", "small"] and first.next_page_token
            c.remove_model("small")  # a removal between pages shifts nothing
            second = c.list_models_page(page_size=2, page_token=first.next_page_token)
            assert [m.id for m in second.models] == ["mid", "probed-0"]
            light = c.list_models_page(omit_probe_results=True)
            assert not any(m.probe_results for m in light.models) and "probed-0" in light.probe_results_omitted
            with pytest.raises(RouterClientError) as info:
                c.list_models_page(page_token="bogus")
            assert info.value.code == CODE.INVALID_ARGUMENT and info.value.field == "page_token"
    finally:
        stop(srv)


def test_batcher_starts_its_router_in_the_worker_thread_before_the_first_batch():
    """``start_worker`` (the policy sets its compute threads and loads its embedder there) runs
    once, in the batch worker's thread, before any batch; one that fails does not stop routing."""

    class Starting(BatchRouter):
        def __init__(self, fail):
            super().__init__(delay=0.0)
            self.fail, self.started = fail, []

        def start_worker(self):
            self.started.append((threading.current_thread().name, list(self.batches)))
            if self.fail:
                raise RuntimeError("no threads for you")

    pool = tuple(catalog())
    for fail in (False, True):
        router = Starting(fail)
        batcher = MicroBatcher(router, max_batch=4, max_wait_s=0.0)
        try:
            assert batcher.submit(RouteCall(_query("q"), pool, 0.0), timeout=5).model_id
            batcher.submit(RouteCall(_query("r"), pool, 0.0), timeout=5)
        finally:
            batcher.close()
        assert router.started == [("routerl-batcher", [])]
