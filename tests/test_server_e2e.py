"""End to end on loopback with a real ``python -m routerl serve`` process.

Lists the default catalog, routes, registers a never-seen model that Route() then picks, removes
it, restarts the server (SIGTERM, graceful) and finds every registration; kills it with SIGKILL
right after RegisterModel returns and finds the model after restart; checks health and
reflection, and the CLI's error output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from routerl.client import RouterClient
from routerl.descriptors.catalog import load_catalog
from routerl.descriptors.model import ModelDescriptor

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = REPO / "configs" / "catalog" / "default.yaml"
START_TIMEOUT = 30.0


class ServerProcess:
    """``python -m routerl serve --port 0`` in a subprocess; ``target`` once it listens."""

    def __init__(self, db: Path, log: Path, *extra: str):
        self.log = log
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "routerl", "serve", "--host", "127.0.0.1", "--port", "0", "--db", str(db), *extra],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True,
        )
        line = self._first_line()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise AssertionError(f"server did not start: {line!r}\n{log.read_text()}")
        self.target = line.split("listening on ", 1)[1].strip()

    def _first_line(self) -> str:
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        return box[0] if box else ""

    def client(self) -> RouterClient:
        return RouterClient(self.target, timeout=10.0)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(15)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.kill()


@pytest.fixture
def spawn(tmp_path):
    started = []

    def start(db: Path, *extra: str) -> ServerProcess:
        proc = ServerProcess(db, tmp_path / "server.log", *extra)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.cleanup()


NEW_MODEL = ModelDescriptor(
    id="acme/math-wizard-1@v1",
    input_price_per_mtok=0.02,
    output_price_per_mtok=0.05,
    context_window=32_000,
    sample_scores={"math_competition": 0.99, "math_grade_school": 0.99},
    sample_counts={"math_competition": 80, "math_grade_school": 120},
    mean_output_tokens=250.0,
    description="a model no router was trained with",
    tags=("new",),
)
HARD_MATH = "Find all real x such that x^4 - 5x^2 + 4 = 0."


def test_serve_route_register_remove_restart(spawn, tmp_path):
    db = tmp_path / "registry.db"
    catalog = load_catalog(DEFAULT_CATALOG)
    server = spawn(db)
    with server.client() as client:
        assert client.health() == "SERVING" and client.health("routerl.v1.Router") == "SERVING"
        services = ProtoReflectionDescriptorDatabase(client.channel).get_services()
        assert "routerl.v1.Router" in services and "grpc.health.v1.Health" in services

        assert client.list_models() == catalog
        before = client.route(HARD_MATH, mode="balanced", domain="math_competition")
        assert before.model_id in {m.id for m in catalog}
        assert before.ranking[0][0] == before.model_id and len(before.ranking) == len(catalog)

        client.register_model(NEW_MODEL)
        after = client.route(HARD_MATH, mode="balanced", domain="math_competition")
        assert after.model_id == NEW_MODEL.id, "a model registered at run time is routed to at once"
        assert after.registry_version == before.registry_version + 1
        assert client.get_model(NEW_MODEL.id) == NEW_MODEL

        extra = ModelDescriptor("keep-me", 1.0, 2.0, sample_scores={"code_reasoning": 0.3})
        client.register_model(extra)
        client.remove_model(NEW_MODEL.id)
        assert NEW_MODEL.id not in {m.id for m in client.list_models()}
        assert client.route(HARD_MATH, mode="balanced", domain="math_competition").model_id == before.model_id
        registry = client.list_models()
        version = client.registry_version()

    assert server.terminate() == 0, "SIGTERM is a clean shutdown"
    log_text = (tmp_path / "server.log").read_text()
    assert "stopped" in log_text
    access = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    assert [a["method"] for a in access].count("Route") == 3, "one bare JSON access line per call on stderr"
    assert all(a["request_id"] and a["status"] == "OK" for a in access)
    assert HARD_MATH not in log_text, "queries are not logged by default"

    restarted = spawn(db)
    with restarted.client() as client:
        assert client.list_models() == registry, "every registration and removal survived the restart"
        assert client.registry_version() == version
        assert client.get_model("keep-me") == extra


def test_model_survives_sigkill_right_after_register(spawn, tmp_path):
    db = tmp_path / "registry.db"
    server = spawn(db)
    with server.client() as client:
        client.register_model(NEW_MODEL)
    server.kill()
    assert server.proc.returncode == -signal.SIGKILL
    with spawn(db).client() as client:
        assert client.get_model(NEW_MODEL.id) == NEW_MODEL
        assert client.route(HARD_MATH, mode="balanced", domain="math_competition").model_id == NEW_MODEL.id


def test_cli_against_real_server(spawn, tmp_path):
    server = spawn(tmp_path / "registry.db")
    env = dict(os.environ, PYTHONPATH=str(REPO), ROUTERL_TARGET=server.target)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "routerl", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

    ok = cli("route", "What is 12 * 12?", "--mode", "cost", "--domain", "math_grade_school")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0] in {m.id for m in load_catalog(DEFAULT_CATALOG)}

    missing = cli("models", "get", "no-such-model")
    assert missing.returncode != 0
    assert missing.stderr.startswith("routerl: error: NOT_FOUND") and "Traceback" not in missing.stderr

    port = server.target.rsplit(":", 1)[1]
    clash = cli("serve", "--host", "127.0.0.1", "--port", port, "--db", str(tmp_path / "other.db"))
    assert clash.returncode != 0 and "routerl: error:" in clash.stderr and "cannot listen" in clash.stderr
    assert not (tmp_path / "other.db").exists(), "a registry made by a start that failed is removed"
    kept = cli("serve", "--host", "127.0.0.1", "--port", port, "--db", str(tmp_path / "registry.db"))
    assert kept.returncode != 0 and "cannot listen" in kept.stderr
    assert (tmp_path / "registry.db").exists(), "an existing registry is never removed"
    with grpc.insecure_channel(server.target) as channel:
        grpc.channel_ready_future(channel).result(timeout=5)
