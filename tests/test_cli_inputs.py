"""Bad input to the client and live commands (``models``, ``route``, ``probe``, ``complete``): a
one-line error naming the flag, exit code 2, before anything is paid for or changed; and updates
that keep what was stored and not given. A tiny replay endpoint (no shared data) stands in for
the provider and counts every request."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from routerl.cli import main
from routerl.cli.client_args import check_target
from routerl.cli import CliError
from routerl.descriptors.catalog import load_catalog, save_catalog
from routerl.descriptors.model import Endpoint, ModelDescriptor
from routerl.live.register import register_in_catalog
from routerl.live.replay import Recorded, ReplayBook, ReplayServer
from routerl.server.app import RouterServer
from routerl.server.config import ServerConfig

PROMPTS = {"What is 2+2?": Recorded("t/1", "4", 12, 2), "What is 3+3?": Recorded("t/2", "6", 12, 2)}
HEADER = "# routerl model catalog: built by hand for a test.\n# Rebuild with:\n#   routerl catalog build --out x\n\n"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("routerl: error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def endpoint():
    server = ReplayServer(ReplayBook({"mm": dict(PROMPTS)})).start()
    yield server
    server.stop()


@pytest.fixture
def target(tmp_path, endpoint):
    catalog = tmp_path / "seed.yaml"
    save_catalog([
        ModelDescriptor("m-cheap", 0.1, 0.2, sample_scores={"math": 0.7}, sample_counts={"math": 10}, tags=("a", "b"),
                        endpoint=Endpoint(endpoint.base_url, "mm", "")),
        ModelDescriptor("m-strong", 5.0, 10.0, sample_scores={"math": 0.9}),
    ], catalog)
    server = RouterServer(ServerConfig(port=0, db=str(tmp_path / "r.db"), catalog=str(catalog)))
    server.start()
    yield f"127.0.0.1:{server.port}"
    server.stop(0).wait()
    server.close()


def get(capsys, target, model_id):
    code, out, err = run(capsys, "models", "get", model_id, "--json", "--target", target)
    assert code == 0, err
    return json.loads(out)


# -- models update keeps what was stored and not given -------------------------------------------
def test_update_of_one_endpoint_part_keeps_the_others(capsys, target, endpoint):
    code, out, err = run(capsys, "models", "update", "m-cheap", "--api-key-env", "MY_KEY", "--target", target)
    assert code == 0, err
    assert get(capsys, target, "m-cheap")["endpoint"] == {"base_url": endpoint.base_url, "model_name": "mm", "api_key_env": "MY_KEY"}
    code, _, err = run(capsys, "models", "update", "m-cheap", "--model-name", "mm2", "--target", target)
    assert code == 0, err
    assert get(capsys, target, "m-cheap")["endpoint"] == {"base_url": endpoint.base_url, "model_name": "mm2", "api_key_env": "MY_KEY"}
    # a model without an endpoint cannot get one from --api-key-env alone
    code, _, err = run(capsys, "models", "update", "m-strong", "--api-key-env", "K", "--target", target)
    assert code == 2
    one_line_error(err, "--base-url")
    assert "endpoint" not in get(capsys, target, "m-strong")


def test_update_of_a_score_or_count_keeps_the_other_domains(capsys, target):
    code, out, err = run(capsys, "models", "update", "m-cheap", "--score", "other=0.4", "--target", target)
    assert code == 0, err
    got = get(capsys, target, "m-cheap")
    assert got["sample_scores"] == {"math": 0.7, "other": 0.4} and got["sample_counts"] == {"math": 10}
    code, _, err = run(capsys, "models", "update", "m-cheap", "--score", "math=0.8", "--count", "other=5", "--target", target)
    assert code == 0, err
    got = get(capsys, target, "m-cheap")
    assert got["sample_scores"] == {"math": 0.8, "other": 0.4} and got["sample_counts"] == {"math": 10, "other": 5}
    # a count without a score names the flag; nothing changes
    code, _, err = run(capsys, "models", "update", "m-cheap", "--count", "nosuch=3", "--target", target)
    assert code == 2
    one_line_error(err, "--count nosuch")
    assert get(capsys, target, "m-cheap")["sample_counts"] == {"math": 10, "other": 5}


def test_update_merges_again_when_another_client_wrote_in_between(capsys, target, monkeypatch):
    """`--score d=x` reads the map, merges and writes against the read's etag; a change made by
    someone else between the read and the write is kept: the CLI reads again and merges again."""
    from routerl.client import RouterClient

    reads = []
    read = RouterClient.read_model

    def racing_read(self, model_id):
        got = read(self, model_id)
        reads.append(model_id)
        if len(reads) == 1:  # another admin sets a score before this client writes
            with RouterClient(target) as other:
                desc = other.get_model(model_id)
                other.update_model(desc.with_changes(sample_scores={**desc.sample_scores, "law": 0.3}), ["sample_scores"])
        return got

    monkeypatch.setattr(RouterClient, "read_model", racing_read)
    code, out, err = run(capsys, "models", "update", "m-cheap", "--score", "code=0.6", "--target", target)
    assert code == 0, err
    assert reads == ["m-cheap", "m-cheap"]
    assert get(capsys, target, "m-cheap")["sample_scores"] == {"math": 0.7, "law": 0.3, "code": 0.6}


def test_update_tags_replace_add_and_remove(capsys, target):
    assert run(capsys, "models", "update", "m-cheap", "--add-tag", "c", "--add-tag", "a", "--target", target)[0] == 0
    assert get(capsys, target, "m-cheap")["tags"] == ["a", "b", "c"]
    assert run(capsys, "models", "update", "m-cheap", "--remove-tag", "a", "--target", target)[0] == 0
    assert get(capsys, target, "m-cheap")["tags"] == ["b", "c"]
    code, _, err = run(capsys, "models", "update", "m-cheap", "--remove-tag", "zz", "--target", target)
    assert code == 2
    one_line_error(err, "--remove-tag zz")
    assert run(capsys, "models", "update", "m-cheap", "--tag", "only", "--target", target)[0] == 0
    assert get(capsys, target, "m-cheap")["tags"] == ["only"]
    with pytest.raises(SystemExit):
        main(["models", "update", "--help"])
    out = capsys.readouterr().out
    assert "replaces all stored tags" in out and "other stored domains are kept" in out


# -- models add/update --file: all or nothing ------------------------------------------------------
def test_models_add_file_registers_nothing_when_an_id_is_taken(capsys, target, tmp_path):
    path = tmp_path / "more.yaml"
    save_catalog([ModelDescriptor("new1", 1, 1), ModelDescriptor("m-strong", 1, 1), ModelDescriptor("new2", 1, 1)], path)
    code, out, err = run(capsys, "models", "add", "--file", path, "--target", target)
    assert code == 2 and "registered new1" not in out
    one_line_error(err, "m-strong", "nothing registered")
    code, out, _ = run(capsys, "models", "list", "--json", "--target", target)
    assert [m["id"] for m in json.loads(out)] == ["m-cheap", "m-strong"]
    assert get(capsys, target, "m-strong")["input_price_per_mtok"] == 5.0

    save_catalog([ModelDescriptor("m-strong", 1, 1), ModelDescriptor("nosuch", 1, 1)], path)
    code, _, err = run(capsys, "models", "update", "--file", path, "--target", target)
    assert code == 2
    one_line_error(err, "nosuch", "nothing updated")
    assert get(capsys, target, "m-strong")["input_price_per_mtok"] == 5.0


# -- route --attempt -------------------------------------------------------------------------------
def test_route_attempt_must_name_a_registered_model_not_denied(capsys, target):
    code, _, err = run(capsys, "route", "q", "--attempt", "nosuch=hello", "--target", target)
    assert code == 2  # the server refuses it, naming the request field
    one_line_error(err, "INVALID_ARGUMENT", "attempts[0].model_id", "'nosuch' is not a registered model")
    code, _, err = run(capsys, "route", "q", "--deny", "m-cheap", "--attempt", "m-cheap=hi", "--target", target)
    assert code == 2
    one_line_error(err, "--attempt m-cheap", "--deny")
    code, _, err = run(capsys, "route", "q", "--allow", "m-strong", "--attempt", "m-cheap=hi", "--target", target)
    assert code == 2
    one_line_error(err, "--attempt m-cheap", "--allow")
    code, out, err = run(capsys, "route", "q", "--attempt", "m-cheap=hi", "--target", target)
    assert code == 0, err
    # an earlier attempt's answer cannot be accepted: its model may be denied
    code, out, err = run(capsys, "route", "q", "--deny", "m-cheap", "--attempt", "m-cheap=hi", "--attempt", "m-strong=ok",
                         "--target", target)
    assert code == 0, err


# -- client flags: --target and --timeout ----------------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["models", "list", "--timeout", "0"], "--timeout"),
    (["models", "list", "--timeout", "-1"], "--timeout"),
    (["models", "list", "--timeout", "inf"], "--timeout"),
    (["models", "list", "--timeout", "nan"], "--timeout"),
    (["models", "list", "--timeout", "1e30"], "--timeout"),
    (["models", "list", "--target", "127.0.0.1:99999"], "--target"),
    (["models", "list", "--target", "127.0.0.1:0"], "--target"),
    (["models", "list", "--target", ""], "--target"),
    (["models", "list", "--target", "localhost"], "--target"),
    (["route", "q", "--target", "::1:50051"], "--target"),
    (["complete", "q", "--target", "127.0.0.1:99999"], "--target"),
    (["complete", "q", "--target", ""], "--target"),
    (["complete", "q", "--target", "127.0.0.1:1", "--timeout", "inf"], "--timeout"),
    (["complete", "q", "--target", "127.0.0.1:1", "--knob", "nan"], "--knob"),
    (["complete", "", "--target", "127.0.0.1:1"], "query"),
])
def test_client_flags_are_checked_before_connecting(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 2
    one_line_error(err, needle)
    assert "DEADLINE_EXCEEDED" not in err and "UNKNOWN" not in err


def test_check_target_accepts_the_usual_forms():
    for good in ("localhost:50051", "127.0.0.1:1", "[::1]:65535", "router.internal:443", "dns:///localhost:50051",
                 "unix:/tmp/routerl.sock"):
        assert check_target(good) == good
    for bad in ("localhost:", ":50051", "localhost:65536", "host name:1", "localhost:5x"):
        with pytest.raises(CliError, match="--target"):
            check_target(bad)


def test_target_from_the_environment_is_named(capsys, monkeypatch):
    monkeypatch.setenv("ROUTERL_TARGET", "127.0.0.1:70000")
    code, _, err = run(capsys, "complete", "q")
    assert code == 2
    one_line_error(err, "$ROUTERL_TARGET")


# -- probe: every check before the first paid call -------------------------------------------------
@pytest.fixture
def probe_set(tmp_path):
    path = tmp_path / "probes.jsonl"
    path.write_text("".join(
        json.dumps({"prompt_id": r.prompt_id, "task": "t", "domain": "math", "prompt": text, "gold_answer": r.text}) + "\n"
        for text, r in PROMPTS.items()
    ), encoding="utf-8")
    return path


def probe_argv(endpoint, probes, *extra):
    return ["probe", "--endpoint", endpoint.base_url, "--model-name", "mm", "--id", "mm-probed", "--input-price", "1",
            "--output-price", "2", "--probes", probes, "--no-progress", *extra]


def test_probe_keeps_the_catalog_header_and_the_other_models(capsys, endpoint, probe_set, tmp_path):
    catalog = tmp_path / "built.yaml"
    save_catalog([ModelDescriptor("m-old", 1, 2, sample_scores={"math": 0.5})], catalog)
    catalog.write_text(HEADER + catalog.read_text(encoding="utf-8"), encoding="utf-8")
    code, _, err = run(capsys, *probe_argv(endpoint, probe_set, "--catalog", catalog))
    assert code == 0, err
    text = catalog.read_text(encoding="utf-8")
    assert text.startswith(HEADER)
    assert [m.id for m in load_catalog(catalog)] == ["m-old", "mm-probed"]
    # no temporary file left (the catalog lock file stays: routerl.live.register.catalog_lock)
    assert sorted(os.listdir(tmp_path)) == ["built.yaml", "built.yaml.lock", "probes.jsonl"]


def test_catalog_write_is_atomic(tmp_path, monkeypatch):
    catalog = tmp_path / "c.yaml"
    save_catalog([ModelDescriptor("m-old", 1, 2)], catalog)
    catalog.write_text(HEADER + catalog.read_text(encoding="utf-8"), encoding="utf-8")
    before = catalog.read_text(encoding="utf-8")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        register_in_catalog(ModelDescriptor("m-new", 1, 2), catalog)
    assert catalog.read_text(encoding="utf-8") == before
    assert sorted(os.listdir(tmp_path)) == ["c.yaml", "c.yaml.lock"]  # no temporary file left
    monkeypatch.undo()
    register_in_catalog(ModelDescriptor("m-new", 1, 2), catalog)
    assert catalog.read_text(encoding="utf-8").startswith(HEADER)
    assert [m.id for m in load_catalog(catalog)] == ["m-old", "m-new"]


@pytest.mark.parametrize("extra, needle", [
    (["--input-price", "nan"], "--input-price"),
    (["--input-price", "-1"], "--input-price"),
    (["--output-price", "inf"], "--output-price"),
    (["--id", "bad id"], "--id"),
    (["--tag", ""], "--tag"),
    (["--description", "x" * 5000], "--description"),
    (["--max-tokens", "-5"], "--max-tokens"),
    (["--max-tokens", "0"], "--max-tokens"),
    (["--timeout", "-1"], "--timeout"),
    (["--timeout", "inf"], "--timeout"),
    (["--backoff", "-1"], "--backoff"),
    (["--backoff", "nan"], "--backoff"),
    (["--retries", "0"], "--retries"),
    (["--scorer", "t=nosuch"], "--scorer"),
    (["--api-key-env", "ROUTERL_TEST_UNSET_KEY"], "--api-key-env"),
    (["--register", "127.0.0.1:99999"], "--register"),
    (["--register", ""], "--register"),
])
def test_probe_checks_its_flags_before_any_call(capsys, endpoint, probe_set, tmp_path, extra, needle):
    argv = probe_argv(endpoint, probe_set, *extra)
    if "--register" not in extra:
        argv += ["--catalog", str(tmp_path / "c.yaml")]
    code, _, err = run(capsys, *argv)
    assert code == 2
    one_line_error(err, needle)
    assert endpoint.requests == 0 and "probe spend" not in err
    assert not (tmp_path / "c.yaml").exists()


def test_probe_checks_the_catalog_before_any_call(capsys, endpoint, probe_set, tmp_path):
    catalog = tmp_path / "c.yaml"
    save_catalog([ModelDescriptor("mm-probed", 1, 2)], catalog)
    before = catalog.read_text(encoding="utf-8")
    code, _, err = run(capsys, *probe_argv(endpoint, probe_set, "--catalog", catalog))
    assert code == 2
    one_line_error(err, "already in the catalog", "--replace")
    catalog.write_text("version: 1\nmodels: [\n", encoding="utf-8")
    code, _, err = run(capsys, *probe_argv(endpoint, probe_set, "--catalog", catalog))
    assert code == 2
    one_line_error(err, "not valid YAML")
    assert endpoint.requests == 0
    catalog.write_text(before, encoding="utf-8")
    code, _, err = run(capsys, *probe_argv(endpoint, probe_set, "--catalog", catalog, "--replace"))
    assert code == 0, err
    assert endpoint.requests == 2 and [m.id for m in load_catalog(catalog)] == ["mm-probed"]


# -- local complete: checked before any model is called --------------------------------------------
@pytest.fixture
def local_catalog(tmp_path, endpoint):
    path = tmp_path / "live.yaml"
    save_catalog([ModelDescriptor("m-cheap", 0.1, 0.2, sample_scores={"math": 0.7}, endpoint=Endpoint(endpoint.base_url, "mm", ""))], path)
    return path


@pytest.mark.parametrize("query, extra, needle", [
    ("What is 2+2?", ["--knob", "-1"], "--knob"),
    ("What is 2+2?", ["--knob", "nan"], "--knob"),
    ("What is 2+2?", ["--knob", "1e12"], "--knob"),
    ("", [], "query"),
    ("   ", [], "query"),
    ("What is 2+2?", ["--call-timeout", "-1"], "--call-timeout"),
    ("What is 2+2?", ["--call-timeout", "0"], "--call-timeout"),
    ("What is 2+2?", ["--retries", "0"], "--retries"),
    ("What is 2+2?", ["--retries", "-2"], "--retries"),
    ("What is 2+2?", ["--timeout", "-1"], "--timeout"),
    ("What is 2+2?", ["--backoff", "nan"], "--backoff"),
    ("What is 2+2?", ["--budget-usd", "-1"], "--budget-usd"),
    ("What is 2+2?", ["--models", ","], "--models"),
])
def test_local_complete_checks_its_flags_before_any_call(capsys, endpoint, local_catalog, query, extra, needle):
    code, _, err = run(capsys, "complete", query, "--catalog", local_catalog, *extra)
    assert code == 2
    one_line_error(err, needle)
    assert "field '" not in err  # the flag, not an internal field name
    assert endpoint.requests == 0


def test_local_complete_retries_one_means_one_try(capsys, endpoint, local_catalog):
    from routerl.live.replay import Fault

    endpoint.fault = lambda model, pid, hit: Fault(status=503)
    code, _, err = run(capsys, "complete", "What is 2+2?", "--catalog", local_catalog, "--retries", "1", "--backoff", "0")
    assert code == 1 and endpoint.requests == 1, err
    endpoint.fault = None
    code, out, err = run(capsys, "complete", "What is 2+2?", "--catalog", local_catalog, "--call-timeout", "5")
    assert code == 0 and out.startswith("4"), err
