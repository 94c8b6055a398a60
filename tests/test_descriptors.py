"""Descriptor validation, building from probe rows, rendering, catalog round trip."""

import math

import pytest

from routerl.descriptors import (
    DescriptorError,
    Endpoint,
    ModelDescriptor,
    build_descriptors,
    load_catalog,
    render_candidates,
    save_catalog,
)


def desc(**kw):
    base = dict(id="m-1", input_price_per_mtok=1.0, output_price_per_mtok=2.0)
    base.update(kw)
    return ModelDescriptor(**base)


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"id": ""}, "id"),
        ({"id": "   "}, "id"),
        ({"id": "a" * 200}, "id"),
        ({"id": "has space"}, "id"),
        ({"id": "zz\n"}, "id"),  # a final newline: the pattern must match the whole id
        ({"id": "a\nb"}, "id"),
        ({"input_price_per_mtok": math.nan}, "input_price_per_mtok"),
        ({"output_price_per_mtok": -1.0}, "output_price_per_mtok"),
        ({"input_price_per_mtok": 1e9}, "input_price_per_mtok"),
        ({"sample_scores": {"math": 1.2}}, "sample_scores.math"),
        ({"sample_scores": {"math": -0.1}}, "sample_scores.math"),
        ({"probe_results": {"p": math.inf}}, "probe_results.p"),
        ({"context_window": -5}, "context_window"),
        ({"latency_ms": math.nan}, "latency_ms"),
        ({"tags": ("x" * 100,)}, "tags"),
        ({"description": "d" * 5000}, "description"),
        ({"sample_scores": {f"d{i}": 0.5 for i in range(300)}}, "sample_scores"),
    ],
)
def test_validation_names_the_field(kw, field):
    with pytest.raises(DescriptorError) as err:
        desc(**kw)
    assert err.value.field == field


def test_from_dict_rejects_unknown_and_missing_fields():
    with pytest.raises(DescriptorError, match="'colour'"):
        ModelDescriptor.from_dict({"id": "a", "input_price_per_mtok": 1, "output_price_per_mtok": 1, "colour": "red"})
    with pytest.raises(DescriptorError) as err:
        ModelDescriptor.from_dict({"id": "a", "input_price_per_mtok": 1})
    assert err.value.field == "output_price_per_mtok"


def test_build_from_probe_rows_only(synthetic_world):
    table, _, _ = synthetic_world
    descs = build_descriptors(table)
    probe = set(table.prompts_in("probe").tolist())
    for name, d in descs.items():
        assert all(table.prompt_index(pid) in probe for pid in d.probe_results)
        j = table.model_index(name)
        domain = table.domain[next(iter(probe))]
        rows = [i for i in probe if table.domain[i] == domain]
        assert d.sample_scores[domain] == pytest.approx(table.score[rows, j].mean(), abs=1e-4)
        assert d.sample_counts[domain] == len(rows)


def test_rendering_is_positional_stable_and_compact(synthetic_world):
    table, _, _ = synthetic_world
    descs = list(build_descriptors(table).values())[:3]
    text = render_candidates(descs, 120, domain="math", evidence=[0.5, 0.25, 0.125])
    assert text == render_candidates(descs, 120, domain="math", evidence=[0.5, 0.25, 0.125])
    lines = text.splitlines()
    assert [l[:3] for l in lines] == ["[1]", "[2]", "[3]"]
    assert all(d.id not in text for d in descs)  # candidates are named by position only
    assert "math" in lines[0] and "near 0.50" in lines[0] and len(lines[0]) < 160


def test_catalog_round_trip_and_errors(tmp_path):
    models = [desc(id="a", sample_scores={"math": 0.5}, sample_counts={"math": 4}, tags=("x",)), desc(id="b")]
    path = tmp_path / "c.yaml"
    save_catalog(models, path)
    assert load_catalog(path) == models
    path.write_text("version: 1\nmodels:\n  - {id: a, input_price_per_mtok: 1, output_price_per_mtok: 1}\n  - {id: a, input_price_per_mtok: 1, output_price_per_mtok: 1}\n")
    with pytest.raises(DescriptorError, match="duplicate id"):
        load_catalog(path)
    path.write_text("version: 1\nmodels:\n  - {id: a, input_price_per_mtok: -1, output_price_per_mtok: 1}\n")
    with pytest.raises(DescriptorError, match=r"models\[0\].*input_price_per_mtok"):
        load_catalog(path)


def test_catalog_errors_name_the_file_entry_and_field_once(tmp_path):
    path = tmp_path / "nan.yaml"
    path.write_text("version: 1\nmodels:\n  - {id: a, input_price_per_mtok: .nan, output_price_per_mtok: 1}\n")
    with pytest.raises(DescriptorError) as err:
        load_catalog(path)
    assert str(err.value) == f"{path}: models[0] (a): field 'input_price_per_mtok': must be finite, got nan"
    assert err.value.field == "input_price_per_mtok"
    path.write_text("version: 1\nmodels:\n  - {id: a, input_price_per_mtok: 1, output_price_per_mtok: 1}\n"
                    "  - {id: a, input_price_per_mtok: 1, output_price_per_mtok: 1}\n")
    with pytest.raises(DescriptorError) as err:
        load_catalog(path)
    assert str(err.value) == f"{path}: models[1]: field 'id': duplicate id 'a'" and err.value.field == "id"


def test_catalog_refuses_an_id_with_a_final_newline(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('version: 1\nmodels:\n  - {id: "a\\n", input_price_per_mtok: 1, output_price_per_mtok: 1}\n')
    with pytest.raises(DescriptorError) as err:
        load_catalog(path)
    assert err.value.field == "id"


GOOD_ENDPOINT = dict(base_url="https://api.example.com/v1", model_name="m-1", api_key_env="EXAMPLE_KEY")


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"base_url": "not a url"}, "endpoint.base_url"),
        ({"base_url": ""}, "endpoint.base_url"),
        ({"base_url": "ftp://host/v1"}, "endpoint.base_url"),
        ({"base_url": "http://"}, "endpoint.base_url"),
        ({"base_url": "http://host:port/v1"}, "endpoint.base_url"),
        ({"base_url": "http://host/v1\n"}, "endpoint.base_url"),
        ({"base_url": "http://" + "h" * 3000}, "endpoint.base_url"),
        ({"model_name": ""}, "endpoint.model_name"),
        ({"model_name": "m\n"}, "endpoint.model_name"),
        ({"api_key_env": "has space"}, "endpoint.api_key_env"),
        ({"api_key_env": "1KEY"}, "endpoint.api_key_env"),
        ({"api_key_env": "KEY\n"}, "endpoint.api_key_env"),
    ],
)
def test_endpoint_check_names_the_field(kw, field):
    with pytest.raises(DescriptorError) as err:
        Endpoint(**{**GOOD_ENDPOINT, **kw}).check()
    assert err.value.field == field


def test_endpoint_check_accepts_callable_endpoints_and_descriptors_keep_unchecked_ones():
    Endpoint(**GOOD_ENDPOINT).check()
    Endpoint("http://127.0.0.1:8000/v1", "local", "").check()  # no key: a local server
    Endpoint("http://[::1]:8000/v1", "local", "_K1").check()
    # Building a descriptor does not check the endpoint: one stored before the check still loads.
    assert desc(endpoint=Endpoint("not a url", "", "")).endpoint.base_url == "not a url"


def test_catalog_refuses_an_endpoint_no_provider_can_use(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\nmodels:\n  - {id: a, input_price_per_mtok: 1, output_price_per_mtok: 1,\n"
                    "     endpoint: {base_url: not a url, model_name: m}}\n")
    with pytest.raises(DescriptorError) as err:
        load_catalog(path)
    assert err.value.field == "endpoint.base_url" and str(err.value).startswith(f"{path}: models[0] (a): field 'endpoint.base_url'")
