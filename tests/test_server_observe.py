"""Observability: the Prometheus endpoint, the JSON access log, request ids; and a CLI whose
stdout reader goes away (``routerl route ... | head``)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_server_service import start

from routerl.client import RouterClient, RouterClientError
from routerl.server.proto import router_pb2 as pb
from routerl.server.proto import router_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[1]
SECRET_QUERY = "what is the launch code 8675309"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(srv):
    srv.stop(0).wait()
    srv.close()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_endpoint_counters_move(tmp_path):
    srv = start(tmp_path, metrics_port=free_port())
    try:
        before = scrape(srv.metrics_port)
        with RouterClient(f"127.0.0.1:{srv.port}", timeout=5) as c:
            for _ in range(3):
                c.route("Solve 2x + 3 = 7", mode="cost", domain="math")
            c.route("hi", knob=0.0, domain="math")
            with pytest.raises(RouterClientError):
                c.route("hi", knob=-1.0)
            c.register_model(c.get_model("small").with_changes(id="small-2"))
        after = scrape(srv.metrics_port)
    finally:
        stop(srv)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("routerl_requests_total", method="Route", code="OK") == 4
    assert delta("routerl_requests_total", method="Route", code="INVALID_ARGUMENT") == 1
    assert delta("routerl_errors_total", method="Route", code="INVALID_ARGUMENT") == 1
    assert delta("routerl_requests_total", method="RegisterModel", code="OK") == 1
    assert delta("routerl_routes_total", model="small", action="route") == 3
    assert delta("routerl_routes_total", model="big", action="route") == 1
    assert delta("routerl_estimated_spend_usd_total", model="small") > 0
    assert delta("routerl_route_latency_seconds_count", router="descriptor-score", mode="cost") == 3
    assert delta("routerl_route_latency_seconds_count", router="descriptor-score", mode="knob") == 1
    assert delta("routerl_request_latency_seconds_count", method="Route") == 5
    assert after[("routerl_registry_models", ())] == 4 and after[("routerl_registry_version", ())] == 2
    assert after[("routerl_in_flight", (("lane", "route"),))] == 0
    assert ("routerl_queue_depth", (("lane", "registry"),)) in after


def test_access_log_and_request_ids(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="routerl.access")
    srv = start(tmp_path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = pb_grpc.RouterStub(channel)
            resp, call = stub.Route.with_call(pb.RouteRequest(query=SECRET_QUERY, request_id="caller-1"), timeout=5)
            assert resp.request_id == "caller-1" and ("routerl-request-id", "caller-1") in call.trailing_metadata()
            resp, call = stub.Route.with_call(pb.RouteRequest(query="q"), timeout=5, metadata=(("x-request-id", "from-md"),))
            assert resp.request_id == "from-md" and ("routerl-request-id", "from-md") in call.trailing_metadata()
            resp, call = stub.Route.with_call(pb.RouteRequest(query="q"), timeout=5)
            generated = resp.request_id
            assert len(generated) == 32 and ("routerl-request-id", generated) in call.trailing_metadata()
            with pytest.raises(grpc.RpcError) as info:
                stub.GetModel(pb.GetModelRequest(id="nope"), timeout=5, metadata=(("x-request-id", "get-1"),))
            assert ("routerl-request-id", "get-1") in info.value.trailing_metadata()
    finally:
        stop(srv)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "routerl.access"]
    assert [line["request_id"] for line in lines] == ["caller-1", "from-md", generated, "get-1"]
    first = lines[0]
    assert first["method"] == "Route" and first["status"] == "OK" and first["router"] == "descriptor-score"
    assert first["mode"] == "balanced" and first["model"] in {"big", "small", "mid"} and first["latency_ms"] >= 0
    assert lines[-1]["status"] == "NOT_FOUND" and lines[-1]["model"] == "nope"
    assert SECRET_QUERY not in caplog.text, "queries stay out of the log unless --log-queries"

    caplog.clear()
    srv = start(tmp_path, log_queries=True)
    try:
        with RouterClient(f"127.0.0.1:{srv.port}", timeout=5) as c:
            c.route(SECRET_QUERY)
    finally:
        stop(srv)
    assert json.loads(caplog.records[-1].getMessage())["query"] == SECRET_QUERY


def test_access_log_shortens_overlong_model_ids(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="routerl.access")
    srv = start(tmp_path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = pb_grpc.RouterStub(channel)
            for call, request in [(stub.GetModel, pb.GetModelRequest(id="g" * 20_000)),
                                  (stub.RegisterModel, pb.RegisterModelRequest(model=pb.ModelDescriptor(id="r" * 100_000)))]:
                with pytest.raises(grpc.RpcError) as info:
                    call(request, timeout=5)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        stop(srv)
    lines = [r.getMessage() for r in caplog.records if r.name == "routerl.access"]
    assert [json.loads(line)["model"] for line in lines] == ["g" * 80 + "...", "r" * 80 + "..."]
    assert max(len(line) for line in lines) < 500


def test_serve_prints_bare_json_access_lines_and_metrics_address(tmp_path):
    from routerl.server.app import serve
    from routerl.server.config import ServerConfig

    log_file = tmp_path / "access.jsonl"
    cfg = ServerConfig(port=0, db=str(tmp_path / "r.db"), access_log=str(log_file), metrics_port=free_port())
    announced = []

    # serve() installs signal handlers, which only the main thread may do: it runs here, and a
    # helper thread makes one call and stops it with SIGINT, as Ctrl-C would.
    def call_then_interrupt():
        try:
            for _ in range(500):
                if len(announced) == 2:
                    break
                time.sleep(0.02)
            with RouterClient(announced[0].split("listening on ")[1], timeout=5) as c:
                c.route("hello")
        finally:
            if announced:
                os.kill(os.getpid(), signal.SIGINT)

    helper = threading.Thread(target=call_then_interrupt)
    helper.start()
    assert serve(cfg, announce=announced.append) == 0
    helper.join(5)
    assert announced[1].startswith("metrics on 127.0.0.1:")
    line = json.loads(log_file.read_text().splitlines()[0])
    assert line["method"] == "Route" and line["status"] == "OK" and "hello" not in log_file.read_text()


def test_cli_output_into_a_closed_pipe_is_quiet(tmp_path):
    srv = start(tmp_path)
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO), ROUTERL_TARGET=f"127.0.0.1:{srv.port}")
        proc = subprocess.Popen([sys.executable, "-m", "routerl", "route", "What is 2+2?"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.close()  # the reader is gone before the first line is written (like `| head -0`)
        err = proc.stderr.read().decode()
        proc.wait(60)
    finally:
        stop(srv)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141


_SLOW_SERVE = """
import sys, time
sys.path.insert(0, {tests!r})
from test_server_service import SlowRouter
import routerl.server.app as app
app.load_router = lambda *a, **k: SlowRouter({delay})
from routerl.cli import main
sys.exit(main(["serve"] + sys.argv[1:]))
"""


def _slow_server(tmp_path, delay: float, grace: float):
    code = _SLOW_SERVE.format(tests=str(REPO / "tests"), delay=delay)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", code, "--port", "0", "--db", str(tmp_path / "r.db"), "--grace", str(grace),
                             "--access-log", "off"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, line.split()[-1]


def _signal_and_wait(proc, timeout: float) -> tuple[int, float]:
    """SIGTERM ``proc``; its exit code and the seconds it took (killed after ``timeout``)."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout), time.monotonic() - started
    finally:
        proc.kill()


def test_serve_exits_after_its_grace_even_with_a_call_still_running(tmp_path):
    """SIGTERM with a call that outlasts the grace period: the call is cancelled for its caller and
    the process exits right after the grace (it used to wait for the handler thread, here 30 s)."""
    proc, target = _slow_server(tmp_path, delay=30.0, grace=0.5)
    errors = []

    def call():
        try:
            with RouterClient(target, timeout=60) as c:
                c.route("q")
        except RouterClientError as exc:
            errors.append(exc.code)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(1.0)  # the call is in the router
    code, seconds = _signal_and_wait(proc, 15)
    caller.join(10)
    assert code == 0 and seconds < 10
    assert errors == [grpc.StatusCode.UNAVAILABLE]
    assert "still running after the 0.5s grace" in proc.stderr.read()


def test_a_second_signal_ends_the_drain_at_once(tmp_path):
    proc, target = _slow_server(tmp_path, delay=30.0, grace=60)
    with RouterClient(target, timeout=60) as c:
        future = c._stub.Route.future(pb.RouteRequest(query="q"), timeout=60)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None, "the first signal drains (grace 60 s)"
        code, seconds = _signal_and_wait(proc, 10)
        future.cancel()
    assert code == 1 and seconds < 5
    assert "SIGTERM again: exiting now" in proc.stderr.read()


def test_access_log_file_is_reopened_after_rotation(tmp_path):
    from routerl.server.observe import access_log, configure_access_log

    path = tmp_path / "access.jsonl"
    restore = configure_access_log(str(path))
    try:
        access_log.info('{"n": 1}')
        path.rename(tmp_path / "access.jsonl.1")  # logrotate moves it away
        access_log.info('{"n": 2}')
    finally:
        restore()
    assert (tmp_path / "access.jsonl.1").read_text() == '{"n": 1}\n'
    assert path.read_text() == '{"n": 2}\n'


def test_a_signal_while_the_server_starts_stops_it(tmp_path, monkeypatch):
    """SIGTERM between installing the handlers and binding: stop() had nothing to stop, and later
    signals were ignored, so the server ran on. It must stop as soon as it has started."""
    from routerl.server.app import RouterServer, serve
    from routerl.server.config import ServerConfig

    started = []
    original = RouterServer.start

    def start_after_a_signal(self):
        started.append(self)
        os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread before the bind below
        return original(self)

    def watchdog():  # without the fix serve() would never return: stop it, and fail below
        time.sleep(15)
        if started:
            started[0].stop(0)

    monkeypatch.setattr(RouterServer, "start", start_after_a_signal)
    threading.Thread(target=watchdog, daemon=True).start()
    t0 = time.monotonic()
    assert serve(ServerConfig(port=0, db=str(tmp_path / "r.db"), router="descriptor-score", access_log="off"),
                 announce=lambda line: None) == 0
    assert time.monotonic() - t0 < 10
