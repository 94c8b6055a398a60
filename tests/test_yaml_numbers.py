"""Every YAML file routerl reads takes ``1e-4`` as a number (YAML 1.2), and what it writes reads back."""

from __future__ import annotations

import pytest
import yaml

from routerl.cli import main as cli_main
from routerl.descriptors.catalog import load_catalog, save_catalog
from routerl.policy.router import read_checkpoint_config
from routerl.server.config import ServerConfig
from routerl.yaml_numbers import dump_yaml, load_yaml, read_yaml_file


def test_exponents_without_a_dot_are_numbers():
    assert yaml.safe_load("x: 5e-2") == {"x": "5e-2"}  # PyYAML's own loader (YAML 1.1) is left as it is
    got = load_yaml("a: 5e-2\nb: 1.0e-5\nc: 3E2\nd: .5e+1\ne: -2e0\nf: '5e-2'\ng: e5\nh: 1e5x\ni: 12\nj: 0.5")
    assert got == {"a": 0.05, "b": 1e-5, "c": 300.0, "d": 5.0, "e": -2.0, "f": "5e-2", "g": "e5", "h": "1e5x", "i": 12, "j": 0.5}
    assert isinstance(got["c"], float)


def test_strings_that_look_like_numbers_round_trip():
    data = {"id": "1e5", "other": "2E-3", "x": 1e-5, "name": "gpt-4o", "n": 3, "tags": ["5e1", "a"]}
    text = dump_yaml(data, sort_keys=False)
    assert "'1e5'" in text and "'2E-3'" in text
    assert load_yaml(text) == data


def test_read_yaml_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"catalog not found: .*nope\.yaml"):
        read_yaml_file(tmp_path / "nope.yaml", "catalog")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: not valid YAML"):
        read_yaml_file(bad, "catalog")


def test_catalog_prices_in_exponent_form(tmp_path):
    path = tmp_path / "cat.yaml"
    path.write_text("version: 1\nmodels:\n  - id: tiny-m\n    input_price_per_mtok: 5e-2\n    output_price_per_mtok: 1e-1\n")
    (model,) = load_catalog(path)
    assert model.input_price_per_mtok == 0.05 and model.output_price_per_mtok == 0.1
    again = tmp_path / "again.yaml"
    save_catalog([model], again)
    assert load_catalog(again) == [model]


def test_server_config_and_checkpoint_config_in_exponent_form(tmp_path):
    path = tmp_path / "server.yaml"
    path.write_text("batch_wait_ms: 5e-1\nkey_budget_usd: 1e1\n")
    config = ServerConfig.from_file(path)
    assert config.batch_wait_ms == 0.5 and config.key_budget_usd == 10.0
    (tmp_path / "routerl_config.yaml").write_text("grpo: {learning_rate: 2e-5}\n")
    assert read_checkpoint_config(tmp_path) == {"grpo": {"learning_rate": 2e-5}}


def test_cli_reports_bad_yaml_in_an_extra_file(tmp_path, capsys):
    bad = tmp_path / "extra.yaml"
    bad.write_text("a: [\n")
    code = cli_main(["catalog", "build", "--data", str(tmp_path / "none.jsonl.gz"), "--models", "seen", "--extra", str(bad), "--out", str(tmp_path / "c.yaml")])
    assert code == 2
    err = capsys.readouterr().err
    assert "routerl: error:" in err and "extra.yaml: not valid YAML" in err and "Traceback" not in err
    assert not (tmp_path / "c.yaml").exists()
