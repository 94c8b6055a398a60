"""The client CLI commands (``route``, ``models``, ``catalog build``) and the server config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from routerl.cli import main
from routerl.descriptors.catalog import load_catalog, save_catalog
from routerl.descriptors.model import ModelDescriptor
from routerl.server.app import RouterServer
from routerl.server.config import ServerConfig

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = REPO / "configs" / "catalog" / "default.yaml"


@pytest.fixture
def target(tmp_path):
    server = RouterServer(ServerConfig(port=0, db=str(tmp_path / "r.db"), catalog=str(DEFAULT_CATALOG)))
    server.start()
    yield f"127.0.0.1:{server.port}"
    server.stop(0).wait()
    server.close()


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_route_json_and_text(capsys, target):
    code, out, _ = run(capsys, "route", "What is 7*8?", "--mode", "quality", "--domain", "math_grade_school", "--target", target, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["action"] == "route" and result["ranking"][0]["model_id"] == result["model_id"]
    code, out, _ = run(capsys, "route", "hi", "--knob", "0.5", "--allow", "gpt-4o-mini-2024-07-18", "--allow",
                       "gemini-1.5-flash", "--deny", "gemini-1.5-flash", "--target", target)
    assert code == 0 and out.splitlines()[0] == "gpt-4o-mini-2024-07-18"
    code, _, err = run(capsys, "route", "hi", "--knob", "-1", "--target", target)
    assert code == 2 and err.startswith("routerl: error: INVALID_ARGUMENT") and "knob" in err
    code, _, err = run(capsys, "route", "hi", "--attempt", "no-equals-sign", "--target", target)
    assert code == 2 and "MODEL_ID=RESPONSE" in err


def test_models_add_update_get_remove(capsys, target, tmp_path):
    code, out, _ = run(capsys, "models", "add", "local/llm", "--input-price", "0.01", "--output-price", "0.02",
                       "--score", "math_grade_school=0.9", "--count", "math_grade_school=40", "--tag", "local",
                       "--base-url", "http://localhost:8000/v1", "--model-name", "llm", "--target", target)
    assert code == 0 and "registered local/llm" in out
    code, out, _ = run(capsys, "models", "update", "local/llm", "--output-price", "0.5", "--target", target)
    assert code == 0
    code, out, _ = run(capsys, "models", "get", "local/llm", "--json", "--target", target)
    got = json.loads(out)
    assert got["output_price_per_mtok"] == 0.5 and got["input_price_per_mtok"] == 0.01
    assert got["sample_counts"] == {"math_grade_school": 40} and got["endpoint"]["model_name"] == "llm"

    models_file = tmp_path / "more.yaml"
    save_catalog([ModelDescriptor("file-a", 1, 2), ModelDescriptor("file-b", 3, 4, sample_scores={"x": 0.5})], models_file)
    code, out, _ = run(capsys, "models", "add", "--file", str(models_file), "--target", target)
    assert code == 0 and out.count("registered") == 2
    code, out, _ = run(capsys, "models", "list", "--json", "--target", target)
    ids = [m["id"] for m in json.loads(out)]
    assert ids[-3:] == ["local/llm", "file-a", "file-b"] and len(ids) == 13

    code, _, err = run(capsys, "models", "add", "--file", str(models_file), "--target", target)
    assert code == 2 and "already registered" in err and "file-a, file-b" in err and "nothing registered" in err
    code, _, err = run(capsys, "models", "add", "x", "--input-price", "nan", "--output-price", "1", "--target", target)
    assert code == 2 and "input_price_per_mtok" in err
    code, _, err = run(capsys, "models", "add", "x", "--output-price", "1", "--target", target)
    assert code == 2 and "--input-price is required" in err
    code, out, _ = run(capsys, "models", "remove", "file-a", "--target", target)
    assert code == 0 and "removed file-a" in out
    code, _, err = run(capsys, "models", "remove", "file-a", "--target", target)
    assert code == 2 and err.startswith("routerl: error: NOT_FOUND")
    code, out, _ = run(capsys, "models", "list", "--target", target)
    assert code == 0 and out.strip().endswith("12 models")


def test_default_catalog_is_valid_and_small():
    catalog = load_catalog(DEFAULT_CATALOG)
    assert 8 <= len(catalog) <= 12
    for desc in catalog:
        assert desc.sample_scores and desc.sample_counts and desc.mean_output_tokens > 0
        assert desc.input_price_per_mtok > 0
        assert len(desc.probe_results) >= 200  # per-probe results: the policy's per-query evidence
    assert "routerl catalog build" in DEFAULT_CATALOG.read_text().split("version:")[0]
    assert DEFAULT_CATALOG.stat().st_size < 200_000


def test_catalog_build_reproduces_default(capsys, tmp_path):
    from conftest import shared_file

    data = shared_file("zeroeval.jsonl.gz")
    header = DEFAULT_CATALOG.read_text().split("version:")[0]
    models = header.split("--models ")[1].split()[0]
    out = tmp_path / "built.yaml"
    code, _, _ = run(capsys, "catalog", "build", "--data", str(data), "--models", models,
                     "--extra", str(REPO / "configs" / "catalog" / "model_info.yaml"), "--out", str(out), "--probe-results")
    assert code == 0
    assert load_catalog(out) == load_catalog(DEFAULT_CATALOG)
    code, _, _ = run(capsys, "catalog", "build", "--data", str(data), "--models", models, "--out", str(out))
    assert code == 0 and all(not d.probe_results for d in load_catalog(out))
    code, _, err = run(capsys, "catalog", "build", "--data", str(data), "--models", "no-such-model", "--out", str(out))
    assert code == 2 and "no-such-model" in err


def test_server_config_file(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"port": 0, "workers": 2, "router_options": {"prior": 0.4}, "default_mode": "cost"}))
    cfg = ServerConfig.from_file(path).with_overrides({"workers": 3, "db": None})
    assert cfg.port == 0 and cfg.workers == 3 and cfg.router_options == {"prior": "0.4"} and cfg.db == "routerl.db"
    assert cfg.request_limits.default_mode == "cost"
    path.write_text("prot: 1\n")
    with pytest.raises(ValueError, match="unknown setting 'prot'"):
        ServerConfig.from_file(path)
    with pytest.raises(ValueError, match="workers"):
        ServerConfig(workers=0)
    with pytest.raises(ValueError, match="default_mode"):
        ServerConfig(default_mode="fast")


@pytest.mark.parametrize(
    "text, message",
    [
        ("port: 50791.5", "field 'port' must be an integer, got 50791.5"),
        ("port: true", "field 'port' must be an integer, got True"),
        ("workers: 1.5", "field 'workers' must be an integer, got 1.5"),
        ("max_queue: 1.5", "field 'max_queue' must be an integer, got 1.5"),
        ("provider_max_tokens: 2.5", "field 'provider_max_tokens' must be an integer, got 2.5"),
        ("db: 5", "field 'db' must be a file path, got 5"),
        ("db: ''", "field 'db' must be a file path, got ''"),
        ("catalog: [1]", "field 'catalog' must be a file path, got [1]"),
        ("router: 7", "field 'router' must be a router name, got 7"),
        ("auth_token_env: [A]", "field 'auth_token_env' must be an environment variable name, got ['A']"),
        ("default_mode: [1]", "field 'default_mode' must be one of quality, balanced, cost, got [1]"),
    ],
)
def test_server_config_file_checks_integer_and_text_types(tmp_path, text, message):
    path = tmp_path / "serve.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ValueError) as err:
        ServerConfig.from_file(path)
    assert str(err.value) == f"{path}: server config: {message}"


@pytest.mark.parametrize(
    "flags, error",
    [
        (["--router", "nosuch"], "unknown router 'nosuch'"),
        (["--router", "descriptor-score", "--router-opt", "nope=1"], "nope"),
        (["--router", "descriptor-score", "--auth-token-env", "ROUTERL_TEST_UNSET_TOKEN"], "ROUTERL_TEST_UNSET_TOKEN"),
    ],
)
def test_serve_refuses_a_bad_setting_before_creating_the_db(capsys, tmp_path, monkeypatch, flags, error):
    monkeypatch.delenv("ROUTERL_TEST_UNSET_TOKEN", raising=False)
    db = tmp_path / "new.db"
    code, _, err = run(capsys, "serve", "--port", "0", "--db", str(db), "--catalog", str(DEFAULT_CATALOG), *flags)
    assert code == 2 and error in err
    assert not list(tmp_path.iterdir()), "no registry file was created"


def test_models_add_file_names_the_field_once(capsys, tmp_path):
    path = tmp_path / "nan.yaml"
    path.write_text("version: 1\nmodels:\n  - {id: a, input_price_per_mtok: .nan, output_price_per_mtok: 1}\n")
    code, _, err = run(capsys, "models", "add", "--file", str(path), "--target", "127.0.0.1:1")
    assert code == 2 and f"{path}: models[0] (a): field 'input_price_per_mtok': must be finite" in err
    assert err.count("input_price_per_mtok") == 1, err


def test_serve_refuses_a_missing_catalog_for_a_new_db(capsys, tmp_path):
    code, _, err = run(capsys, "serve", "--port", "0", "--db", str(tmp_path / "n.db"), "--catalog", str(tmp_path / "none.yaml"))
    assert code == 2 and "catalog not found" in err


def test_router_loader():
    from routerl.routers.descriptor_score import DescriptorScoreRouter
    from routerl.server.router_loader import load_router

    router = load_router(None, {"prior": "0.25"})
    assert isinstance(router, DescriptorScoreRouter) and router.prior == 0.25
    with pytest.raises(ValueError, match="does not accept"):
        load_router("descriptor-score", {"nope": "1"})
    with pytest.raises(ValueError, match="cannot be combined"):
        load_router("cheapest", checkpoint="x")
    pytest.importorskip("routerl.routers.baselines")
    with pytest.raises(ValueError, match="unknown router"):
        load_router("no-such-router")
    assert load_router("cheapest").decide  # a baseline by name, through the registry


def test_default_router_is_the_shipped_policy(monkeypatch, tmp_path):
    from routerl.server import router_loader as rl

    monkeypatch.delenv(rl.DEFAULT_ROUTER_ENV, raising=False)
    monkeypatch.setattr(rl, "SHIPPED_ADAPTER", tmp_path / "adapter_config.json")
    assert rl.default_router() == "descriptor-score"  # no adapter ships: the descriptor-only router
    (tmp_path / "adapter_config.json").write_text("{}")
    assert rl.default_router() == "policy"
    monkeypatch.setenv(rl.DEFAULT_ROUTER_ENV, "cheapest")
    assert rl.default_router() == "cheapest"


def test_models_update_from_file_replaces_whole_descriptor(capsys, target, tmp_path):
    path = tmp_path / "upd.yaml"
    save_catalog([ModelDescriptor("gemini-1.5-flash", 0.5, 0.5, tags=("replaced",))], path)
    code, out, _ = run(capsys, "models", "update", "--file", str(path), "--target", target)
    assert code == 0 and "updated gemini-1.5-flash" in out
    code, out, _ = run(capsys, "models", "get", "gemini-1.5-flash", "--json", "--target", target)
    got = json.loads(out)
    assert got["input_price_per_mtok"] == 0.5 and got["sample_scores"] == {} and got["tags"] == ["replaced"]
    code, _, err = run(capsys, "models", "update", "gemini-1.5-flash", "--target", target)
    assert code == 2 and "no field to change" in err
    code, _, err = run(capsys, "models", "update", "--file", str(path), "x", "--target", target)
    assert code == 2 and "not both" in err
